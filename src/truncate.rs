//! Fitting a rendered prompt into its token budget by dropping history.
//!
//! Only history messages (spliced from `messages` parameters) are ever
//! dropped, never template-written ones. The default drops the oldest first,
//! then keeps dropping while the first remaining history message is not a
//! `user` turn, so the history never starts with an orphan assistant or tool
//! turn and an assistant's tool call never loses its results. Each message is
//! counted once and the fit is a single pass over suffix sums: linear in the
//! history length.

use serde::Serialize;

use crate::message::Role;

/// How history is dropped when a prompt is over budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Strategy {
    /// Drop the oldest history messages first (the default).
    #[default]
    DropOldest,
    /// Keep the first N history messages (say, the turn that stated the
    /// task) as well as the newest, and drop from the middle, oldest first.
    KeepFirst(usize),
    /// Never drop anything: an over-budget prompt is an error.
    Never,
    /// Drop the oldest history, in steps of `slack_percent` of the budget
    /// (20 is a good start), so that the start of the kept history stays
    /// put while the next turns are appended: a "conversation so far"
    /// cache breakpoint keeps hitting instead of missing on every turn.
    ///
    /// The steps are fixed points of the history itself (the first user
    /// turn after each further `slack` tokens from its start), so the
    /// same conversation cuts at the same place render after render; the
    /// cut moves on by a step only when the kept history no longer fits.
    /// Costs up to `slack_percent` of the budget in dropped context.
    CacheAware {
        /// The step, in percent of the budget (1 to 90).
        slack_percent: u8,
    },
}

impl Strategy {
    /// [`Strategy::CacheAware`] with a 20% step.
    pub const CACHE_AWARE: Strategy = Strategy::CacheAware { slack_percent: 20 };
}

/// What a fit dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TruncationReport {
    /// Tokens available to the prompt: `max_tokens - reserve_output`.
    pub budget: usize,
    /// How many history messages were dropped.
    pub dropped: usize,
}

/// One message as the fit sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Item {
    pub tokens: usize,
    pub history: bool,
    pub role: Role,
    /// An assistant message that calls tools (its results follow it).
    pub calls_tools: bool,
}

/// Why a prompt cannot fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CannotFit {
    /// Tokens of the smallest prompt the strategy allows.
    pub needed: usize,
    /// History messages that could be dropped.
    pub droppable: usize,
}

/// Chooses which messages to keep so that their tokens plus `fixed` (the
/// reply priming) fit `budget`. Returns the keep mask and how many were
/// dropped.
pub(crate) fn fit(
    items: &[Item],
    fixed: usize,
    budget: usize,
    strategy: Strategy,
) -> Result<(Vec<bool>, usize), CannotFit> {
    let total: usize = items.iter().map(|i| i.tokens).sum::<usize>() + fixed;
    let mut keep = vec![true; items.len()];
    if total <= budget {
        return Ok((keep, 0));
    }
    let history: Vec<usize> = (0..items.len()).filter(|&i| items[i].history).collect();
    let protected = match strategy {
        Strategy::DropOldest | Strategy::CacheAware { .. } => 0,
        Strategy::Never => history.len(),
        Strategy::KeepFirst(n) => {
            // Never cut between a tool call and its results.
            let mut n = n.min(history.len());
            while n < history.len()
                && n > 0
                && (items[history[n]].role == Role::Tool || items[history[n - 1]].calls_tools)
            {
                n += 1;
            }
            n
        }
    };
    let tail = &history[protected..];
    let tail_tokens: usize = tail.iter().map(|&i| items[i].tokens).sum();
    let floor = total - tail_tokens;
    if let Strategy::CacheAware { slack_percent } = strategy {
        let step = (budget * usize::from(slack_percent.clamp(1, 90)) / 100).max(1);
        // The cut points: the first user turn at or after each multiple of
        // `step` tokens from the start of the history. The first of them
        // that fits is the cut.
        let (mut dropped, mut next) = (0usize, step);
        for p in 0..=tail.len() {
            let starts_well = p == tail.len() || items[tail[p]].role == Role::User;
            if starts_well && (p == tail.len() || dropped >= next) {
                if floor + (tail_tokens - dropped) <= budget {
                    for &i in &tail[..p] {
                        keep[i] = false;
                    }
                    return Ok((keep, p));
                }
                next = (dropped / step + 1) * step;
            }
            if p < tail.len() {
                dropped += items[tail[p]].tokens;
            }
        }
        return Err(CannotFit {
            needed: floor,
            droppable: tail.len(),
        });
    }
    // Smallest p such that dropping tail[..p] fits and tail[p] is a user
    // turn (or everything is dropped). One pass, tokens of the kept suffix
    // shrinking as p grows.
    let mut kept = tail_tokens;
    for p in 0..=tail.len() {
        let starts_well = p == tail.len() || items[tail[p]].role == Role::User;
        if starts_well && floor + kept <= budget {
            for &i in &tail[..p] {
                keep[i] = false;
            }
            return Ok((keep, p));
        }
        if p < tail.len() {
            kept -= items[tail[p]].tokens;
        }
    }
    Err(CannotFit {
        needed: floor,
        droppable: tail.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(role: Role, tokens: usize, history: bool) -> Item {
        Item {
            tokens,
            history,
            role,
            calls_tools: false,
        }
    }

    fn call(tokens: usize) -> Item {
        Item {
            calls_tools: true,
            ..item(Role::Assistant, tokens, true)
        }
    }

    use Role::{Assistant as A, System as S, Tool as T, User as U};

    fn kept(items: &[Item], budget: usize, s: Strategy) -> Result<Vec<usize>, CannotFit> {
        fit(items, 3, budget, s).map(|(keep, _)| {
            keep.iter()
                .enumerate()
                .filter(|(_, k)| **k)
                .map(|(i, _)| i)
                .collect()
        })
    }

    #[test]
    fn nothing_dropped_when_it_fits() {
        let items = [item(S, 10, false), item(U, 10, true), item(U, 5, false)];
        assert_eq!(kept(&items, 28, Strategy::DropOldest).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn oldest_history_goes_first_and_template_messages_stay() {
        let items = [
            item(S, 10, false),
            item(U, 10, true),
            item(A, 10, true),
            item(U, 10, true),
            item(A, 10, true),
            item(U, 5, false),
        ];
        // 58 total: dropping the first pair gives 38.
        assert_eq!(
            kept(&items, 40, Strategy::DropOldest).unwrap(),
            [0, 3, 4, 5]
        );
    }

    #[test]
    fn history_never_starts_with_an_orphan_turn() {
        let items = [
            item(S, 10, false),
            item(U, 10, true),
            item(A, 10, true),
            item(U, 10, true),
            item(U, 5, false),
        ];
        // Dropping the first user turn alone would fit (38 <= 40) but leave
        // an assistant turn first: it goes too.
        assert_eq!(kept(&items, 40, Strategy::DropOldest).unwrap(), [0, 3, 4]);
    }

    #[test]
    fn tool_calls_keep_their_results() {
        let items = [
            item(S, 10, false),
            item(U, 10, true),
            call(10),
            item(T, 10, true),
            item(T, 10, true),
            item(A, 10, true),
            item(U, 10, true),
            item(U, 5, false),
        ];
        // Dropping up to the call would leave its results orphaned: the
        // whole exchange goes, and the history restarts at the next user turn.
        assert_eq!(kept(&items, 70, Strategy::DropOldest).unwrap(), [0, 6, 7]);
    }

    #[test]
    fn cache_aware_cuts_at_fixed_points_of_the_history() {
        // System 10, then ten user/assistant pairs of 10 each, then the
        // question 5: 215 with priming. Budget 150, step 20% = 30 tokens.
        let mut items = vec![item(S, 10, false)];
        for _ in 0..10 {
            items.push(item(U, 10, true));
            items.push(item(A, 10, true));
        }
        items.push(item(U, 5, false));
        let strategy = Strategy::CacheAware { slack_percent: 20 };
        let kept_now = kept(&items, 150, strategy).unwrap();
        // Drop-oldest drops 8 messages (80 tokens, to 138). The cut points
        // are the first user turns at 30, 60 and 90 tokens dropped or
        // more: 40 (178, too much), 60 (158), then 100 (118): ten
        // messages go, leaving 32 tokens for the next turns.
        assert_eq!(kept_now.len(), items.len() - 10);
        // One more exchange: the same cut still fits, so the start stays.
        let mut longer = items.clone();
        longer.insert(longer.len() - 1, item(U, 10, true));
        longer.insert(longer.len() - 1, item(A, 10, true));
        let kept_next = kept(&longer, 150, strategy).unwrap();
        assert_eq!(
            kept_next[1], kept_now[1],
            "the kept history starts at the same turn"
        );
        // Never a cut inside a tool exchange.
        let tools = [
            item(S, 10, false),
            item(U, 10, true),
            call(40),
            item(T, 10, true),
            item(U, 10, true),
            item(A, 10, true),
            item(U, 5, false),
        ];
        let k = kept(&tools, 60, strategy).unwrap();
        assert_eq!(k, [0, 4, 5, 6]);
    }

    #[test]
    fn cannot_fit_reports_the_floor() {
        let items = [item(S, 50, false), item(U, 10, true), item(U, 10, false)];
        let err = kept(&items, 40, Strategy::DropOldest).unwrap_err();
        assert_eq!(
            err,
            CannotFit {
                needed: 63,
                droppable: 1
            }
        );
    }

    #[test]
    fn keep_first_protects_the_opening_turns() {
        let items = [
            item(U, 10, true),
            item(A, 10, true),
            item(U, 10, true),
            item(A, 10, true),
            item(U, 10, true),
            item(U, 5, false),
        ];
        assert_eq!(
            kept(&items, 40, Strategy::KeepFirst(2)).unwrap(),
            [0, 1, 4, 5]
        );
        assert!(kept(&items, 40, Strategy::Never).is_err());
    }

    #[test]
    fn keep_first_does_not_split_a_tool_exchange() {
        let items = [
            item(U, 10, true),
            call(10),
            item(T, 10, true),
            item(U, 10, true),
            item(U, 5, false),
        ];
        // KeepFirst(2) would end on the call: its result is kept with it.
        assert_eq!(
            kept(&items, 100, Strategy::KeepFirst(2)).unwrap(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(
            kept(&items, 40, Strategy::KeepFirst(2)).unwrap(),
            [0, 1, 2, 4]
        );
    }
}
