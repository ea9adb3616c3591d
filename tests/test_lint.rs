//! `promptbook::lint` diagnostics, as `promptbook lint` prints them.

#[test]
fn lint_reports_every_problem_with_its_place() {
    let diagnostics = promptbook::lint("tests/fixtures/lint").unwrap();
    let lines: Vec<String> = diagnostics.iter().map(ToString::to_string).collect();
    insta::assert_snapshot!(lines.join("\n"));
}

#[test]
fn warnings_alone_do_not_stop_loading() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        "tests/fixtures/lint/unused.prompt.yaml",
        dir.path().join("unused.prompt.yaml"),
    )
    .unwrap();
    let registry = promptbook::Registry::load(dir.path()).unwrap();
    let warnings: Vec<String> = registry
        .warnings()
        .iter()
        .map(|w| w.message().to_owned())
        .collect();
    assert_eq!(
        warnings,
        [
            "parameter `spare` is declared but never used",
            "parameter `hist` is declared but never used"
        ]
    );
}
