//! Deal stages and how a deal moves between them (PRD F8.7–F8.9).
//!
//! Stages are per-tenant rows (key, label, default probability, order, and whether they are
//! open, won or lost), so custom stages need no schema change; these rules decide what a move
//! does, whatever the stages are called. The database applies the outcome and records it in
//! the stage history.

use std::fmt;

/// Whether a stage keeps a deal open or closes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    Open,
    Won,
    Lost,
}

impl StageKind {
    pub fn is_closed(self) -> bool {
        self != StageKind::Open
    }
}

/// A pipeline stage as a tenant defines it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    pub key: String,
    pub kind: StageKind,
    /// The probability a deal gets on entering the stage, 0–100.
    pub default_probability: u8,
}

/// The stages every new tenant starts with: key, label, default probability, kind.
pub const DEFAULT_STAGES: [(&str, &str, u8, StageKind); 6] = [
    ("prospect", "Prospect", 10, StageKind::Open),
    ("qualified", "Qualified", 25, StageKind::Open),
    ("proposal", "Proposal", 50, StageKind::Open),
    ("negotiation", "Negotiation", 75, StageKind::Open),
    ("won", "Won", 100, StageKind::Won),
    ("lost", "Lost", 0, StageKind::Lost),
];

/// The longest reason a lost deal may carry.
pub const REASON_MAX: usize = 500;

/// What a permitted move does to the deal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub probability: u8,
    /// The deal closes now (won or lost): the database sets its close time.
    pub closes: bool,
    /// The deal is open again: the database clears its close time and lost reason.
    pub reopens: bool,
    pub lost_reason: Option<String>,
}

/// Why a move is refused. Each names what the caller should do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransitionError {
    /// The deal is in that stage already.
    SameStage,
    /// A won or lost deal changes stage only through an explicit reopen.
    Closed,
    /// Reopening a deal that is not closed.
    NotClosed,
    /// A reopen must land in an open stage.
    ReopenIntoClosedStage,
    /// Lost needs a reason (1–500 characters).
    ReasonRequired,
    /// A reason longer than [`REASON_MAX`].
    ReasonTooLong,
    /// A reason given for a stage other than lost.
    ReasonNotExpected,
    /// Probability outside 0–100, or contradicting a closing stage (won is 100, lost 0).
    Probability(i64),
}

impl fmt::Display for TransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransitionError::SameStage => f.write_str("the deal is in this stage already"),
            TransitionError::Closed => {
                f.write_str("the deal is closed: it changes stage only through reopen_deal")
            }
            TransitionError::NotClosed => f.write_str("only a won or lost deal can be reopened"),
            TransitionError::ReopenIntoClosedStage => {
                f.write_str("a reopened deal goes into an open stage")
            }
            TransitionError::ReasonRequired => f.write_str("a lost deal needs a reason"),
            TransitionError::ReasonTooLong => {
                write!(f, "the reason may have at most {REASON_MAX} characters")
            }
            TransitionError::ReasonNotExpected => f.write_str("only a lost deal takes a reason"),
            TransitionError::Probability(p) => write!(
                f,
                "probability {p} is not allowed here: 0 to 100, 100 for won, 0 for lost"
            ),
        }
    }
}

impl std::error::Error for TransitionError {}

/// Moves a deal from `current` to `target`, with an optional explicit probability and the
/// reason a lost deal needs.
///
/// - A closed deal does not move (see [`reopen`]).
/// - Entering an open stage sets its default probability unless one is given (0–100).
/// - Won sets 100 and closes; lost needs a reason, sets 0 and closes.
pub fn move_deal(
    current: &Stage,
    target: &Stage,
    probability: Option<i64>,
    reason: Option<&str>,
) -> Result<Outcome, TransitionError> {
    if current.kind.is_closed() {
        return Err(TransitionError::Closed);
    }
    if current.key == target.key {
        return Err(TransitionError::SameStage);
    }
    let reason = reason.map(str::trim).filter(|r| !r.is_empty());
    match target.kind {
        StageKind::Open => {
            if reason.is_some() {
                return Err(TransitionError::ReasonNotExpected);
            }
            Ok(Outcome {
                probability: probability_or(probability, target.default_probability)?,
                closes: false,
                reopens: false,
                lost_reason: None,
            })
        }
        StageKind::Won => {
            if reason.is_some() {
                return Err(TransitionError::ReasonNotExpected);
            }
            fixed_probability(probability, 100)?;
            Ok(Outcome {
                probability: 100,
                closes: true,
                reopens: false,
                lost_reason: None,
            })
        }
        StageKind::Lost => {
            let reason = reason.ok_or(TransitionError::ReasonRequired)?;
            if reason.chars().count() > REASON_MAX {
                return Err(TransitionError::ReasonTooLong);
            }
            fixed_probability(probability, 0)?;
            Ok(Outcome {
                probability: 0,
                closes: true,
                reopens: false,
                lost_reason: Some(reason.to_owned()),
            })
        }
    }
}

/// Reopens a won or lost deal into an open stage, with that stage's default probability
/// unless one is given.
pub fn reopen(
    current: &Stage,
    target: &Stage,
    probability: Option<i64>,
) -> Result<Outcome, TransitionError> {
    if !current.kind.is_closed() {
        return Err(TransitionError::NotClosed);
    }
    if target.kind.is_closed() {
        return Err(TransitionError::ReopenIntoClosedStage);
    }
    Ok(Outcome {
        probability: probability_or(probability, target.default_probability)?,
        closes: false,
        reopens: true,
        lost_reason: None,
    })
}

/// A probability a caller sets on an open deal without moving it: 0–100.
pub fn probability(p: i64) -> Result<u8, TransitionError> {
    u8::try_from(p)
        .ok()
        .filter(|p| *p <= 100)
        .ok_or(TransitionError::Probability(p))
}

fn probability_or(given: Option<i64>, default: u8) -> Result<u8, TransitionError> {
    given.map_or(Ok(default), probability)
}

fn fixed_probability(given: Option<i64>, required: u8) -> Result<(), TransitionError> {
    match given {
        Some(p) if p != i64::from(required) => Err(TransitionError::Probability(p)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    fn stage(key: &str) -> Stage {
        let (key, _, default_probability, kind) = DEFAULT_STAGES
            .into_iter()
            .find(|s| s.0 == key)
            .expect("a default stage");
        Stage {
            key: key.to_owned(),
            kind,
            default_probability,
        }
    }

    #[test]
    fn default_stages_are_ordered_and_well_formed() {
        let keys: Vec<&str> = DEFAULT_STAGES.iter().map(|s| s.0).collect();
        assert_eq!(
            keys,
            [
                "prospect",
                "qualified",
                "proposal",
                "negotiation",
                "won",
                "lost"
            ]
        );
        assert!(DEFAULT_STAGES.iter().all(|s| s.2 <= 100));
        let open: Vec<u8> = DEFAULT_STAGES
            .iter()
            .filter(|s| s.3 == StageKind::Open)
            .map(|s| s.2)
            .collect();
        assert!(
            open.windows(2).all(|w| w[0] < w[1]),
            "open stages rise: {open:?}"
        );
    }

    #[test]
    fn entering_an_open_stage_sets_its_probability_unless_given() {
        let o = move_deal(&stage("prospect"), &stage("proposal"), None, None).unwrap();
        assert_eq!((o.probability, o.closes, o.reopens), (50, false, false));
        let o = move_deal(&stage("proposal"), &stage("qualified"), Some(40), None).unwrap();
        assert_eq!(
            o.probability, 40,
            "backwards is allowed, with an explicit probability"
        );
        assert_eq!(
            move_deal(&stage("prospect"), &stage("proposal"), Some(101), None),
            Err(TransitionError::Probability(101))
        );
        assert_eq!(
            move_deal(&stage("prospect"), &stage("proposal"), Some(-1), None),
            Err(TransitionError::Probability(-1))
        );
    }

    #[test]
    fn won_sets_100_and_closes() {
        let o = move_deal(&stage("negotiation"), &stage("won"), None, None).unwrap();
        assert_eq!((o.probability, o.closes), (100, true));
        assert!(move_deal(&stage("negotiation"), &stage("won"), Some(100), None).is_ok());
        assert_eq!(
            move_deal(&stage("negotiation"), &stage("won"), Some(90), None),
            Err(TransitionError::Probability(90))
        );
        assert_eq!(
            move_deal(&stage("negotiation"), &stage("won"), None, Some("great")),
            Err(TransitionError::ReasonNotExpected)
        );
    }

    #[test]
    fn lost_needs_a_reason() {
        assert_eq!(
            move_deal(&stage("proposal"), &stage("lost"), None, None),
            Err(TransitionError::ReasonRequired)
        );
        assert_eq!(
            move_deal(&stage("proposal"), &stage("lost"), None, Some("   ")),
            Err(TransitionError::ReasonRequired)
        );
        let o = move_deal(
            &stage("proposal"),
            &stage("lost"),
            None,
            Some("  went with a competitor "),
        )
        .unwrap();
        assert_eq!(
            (o.probability, o.closes, o.lost_reason.as_deref()),
            (0, true, Some("went with a competitor"))
        );
        assert_eq!(
            move_deal(
                &stage("proposal"),
                &stage("lost"),
                None,
                Some(&"x".repeat(501))
            ),
            Err(TransitionError::ReasonTooLong)
        );
        assert_eq!(
            move_deal(&stage("proposal"), &stage("lost"), Some(10), Some("price")),
            Err(TransitionError::Probability(10))
        );
    }

    #[test]
    fn a_closed_deal_moves_only_through_reopen() {
        for closed in ["won", "lost"] {
            for target in ["prospect", "negotiation", "won", "lost"] {
                assert_eq!(
                    move_deal(&stage(closed), &stage(target), None, Some("r")),
                    Err(TransitionError::Closed),
                    "{closed} -> {target}"
                );
            }
            let o = reopen(&stage(closed), &stage("negotiation"), None).unwrap();
            assert_eq!((o.probability, o.closes, o.reopens), (75, false, true));
            assert_eq!(
                reopen(&stage(closed), &stage("won"), None),
                Err(TransitionError::ReopenIntoClosedStage)
            );
        }
        assert_eq!(
            reopen(&stage("proposal"), &stage("prospect"), None),
            Err(TransitionError::NotClosed)
        );
    }

    #[test]
    fn moving_to_the_same_stage_is_refused() {
        assert_eq!(
            move_deal(&stage("proposal"), &stage("proposal"), None, None),
            Err(TransitionError::SameStage)
        );
    }

    #[test]
    fn custom_stages_follow_their_kind() {
        let demo = Stage {
            key: "demo".into(),
            kind: StageKind::Open,
            default_probability: 35,
        };
        let churned = Stage {
            key: "churned".into(),
            kind: StageKind::Lost,
            default_probability: 0,
        };
        assert_eq!(
            move_deal(&stage("qualified"), &demo, None, None)
                .unwrap()
                .probability,
            35
        );
        assert_eq!(
            move_deal(&demo, &churned, None, None),
            Err(TransitionError::ReasonRequired)
        );
        assert!(
            move_deal(&demo, &churned, None, Some("budget"))
                .unwrap()
                .closes
        );
    }

    #[test]
    fn errors_say_what_to_do() {
        assert!(TransitionError::Closed.to_string().contains("reopen_deal"));
        assert!(TransitionError::ReasonRequired
            .to_string()
            .contains("reason"));
    }
}
