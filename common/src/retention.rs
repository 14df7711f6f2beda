//! Which items a `--keep-*` policy keeps, with Proxmox Backup Server's
//! semantics, so hv-snap prune and hv-backup prune agree with each other and
//! with what Proxmox users expect: rules apply in order (last, hourly, daily,
//! weekly, monthly, yearly); each keeps the newest item of each of its next
//! N periods that hold an item; a period already covered by an item kept by
//! an earlier rule does not count again; items no rule keeps are removed.
//! With no rule at all, everything is kept. Periods are UTC.

use crate::time;
use std::collections::HashSet;

/// A retention policy: how many of each period's newest items to keep
/// (Proxmox Backup Server's rules). `None` is a rule not given. Read from
/// a file (hv-snap schedule's policies) as the `--keep-*` options without
/// `keep-`: `{"last": 24, "daily": 7}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    pub last: Option<usize>,
    pub hourly: Option<usize>,
    pub daily: Option<usize>,
    pub weekly: Option<usize>,
    pub monthly: Option<usize>,
    pub yearly: Option<usize>,
}

impl Keep {
    pub fn is_empty(&self) -> bool {
        [
            self.last,
            self.hourly,
            self.daily,
            self.weekly,
            self.monthly,
            self.yearly,
        ]
        .iter()
        .all(|k| k.unwrap_or(0) == 0)
    }
}

/// The rule that keeps an item, or `None` when it goes.
pub type Verdict = Option<&'static str>;

/// `times` are Unix seconds; the verdicts come back in the same order. Of
/// two items with the same time, the later in the slice counts as newer.
pub fn judge(times: &[i64], keep: &Keep) -> Vec<Verdict> {
    if keep.is_empty() {
        return vec![Some("keep-all"); times.len()];
    }
    let mut order: Vec<usize> = (0..times.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse((times[i], i)));
    let mut verdicts: Vec<Verdict> = vec![None; times.len()];
    let mut decided = vec![false; times.len()];
    type Period = fn(i64, usize) -> String;
    let rules: [(&'static str, Option<usize>, Period); 6] = [
        ("keep-last", keep.last, |_, i| i.to_string()),
        ("keep-hourly", keep.hourly, |t, _| {
            time::rfc3339(t)[..13].to_owned()
        }),
        ("keep-daily", keep.daily, |t, _| {
            time::rfc3339(t)[..10].to_owned()
        }),
        ("keep-weekly", keep.weekly, |t, _| {
            format!("{:?}", time::iso_week(t))
        }),
        ("keep-monthly", keep.monthly, |t, _| {
            time::rfc3339(t)[..7].to_owned()
        }),
        ("keep-yearly", keep.yearly, |t, _| {
            time::rfc3339(t)[..4].to_owned()
        }),
    ];
    for (rule, count, period) in rules {
        let Some(count) = count.filter(|c| *c > 0) else {
            continue;
        };
        let covered: HashSet<String> = order
            .iter()
            .filter(|&&i| verdicts[i].is_some())
            .map(|&i| period(times[i], i))
            .collect();
        let mut chosen: HashSet<String> = HashSet::new();
        for &i in &order {
            if decided[i] {
                continue;
            }
            let p = period(times[i], i);
            if covered.contains(&p) {
                continue;
            }
            if chosen.contains(&p) {
                decided[i] = true; // an older item of a period already kept
                continue;
            }
            if chosen.len() >= count {
                break;
            }
            chosen.insert(p);
            verdicts[i] = Some(rule);
            decided[i] = true;
        }
    }
    verdicts
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600;
    const D: i64 = 86_400;
    /// 2026-11-21T00:00:00Z, a Saturday.
    const T0: i64 = 1_795_219_200;

    fn kept(times: &[i64], keep: Keep) -> Vec<i64> {
        let v = judge(times, &keep);
        let mut k: Vec<i64> = times
            .iter()
            .zip(&v)
            .filter(|(_, v)| v.is_some())
            .map(|(t, _)| *t)
            .collect();
        k.sort();
        k
    }

    #[test]
    fn no_rule_keeps_everything() {
        assert_eq!(kept(&[1, 2, 3], Keep::default()).len(), 3);
    }

    #[test]
    fn keep_last_keeps_the_newest() {
        let times = [T0, T0 + H, T0 + 2 * H, T0 + 3 * H];
        assert_eq!(
            kept(
                &times,
                Keep {
                    last: Some(2),
                    ..Keep::default()
                }
            ),
            vec![T0 + 2 * H, T0 + 3 * H]
        );
    }

    #[test]
    fn ties_go_to_the_later_item() {
        let v = judge(
            &[T0, T0, T0],
            &Keep {
                last: Some(1),
                ..Keep::default()
            },
        );
        assert_eq!(v, vec![None, None, Some("keep-last")]);
    }

    #[test]
    fn daily_keeps_the_newest_of_each_day() {
        // Two a day for four days.
        let times: Vec<i64> = (0..4)
            .flat_map(|d| [T0 + d * D + H, T0 + d * D + 20 * H])
            .collect();
        let k = kept(
            &times,
            Keep {
                daily: Some(3),
                ..Keep::default()
            },
        );
        assert_eq!(
            k,
            vec![T0 + D + 20 * H, T0 + 2 * D + 20 * H, T0 + 3 * D + 20 * H]
        );
    }

    #[test]
    fn periods_covered_by_earlier_rules_do_not_count_again() {
        // Proxmox: keep-last 1 keeps day 4's newest; keep-daily 2 then keeps days 3 and 2.
        let times: Vec<i64> = (0..4).map(|d| T0 + d * D + 12 * H).collect();
        let v = judge(
            &times,
            &Keep {
                last: Some(1),
                daily: Some(2),
                ..Keep::default()
            },
        );
        assert_eq!(
            v,
            vec![
                None,
                Some("keep-daily"),
                Some("keep-daily"),
                Some("keep-last")
            ]
        );
    }

    #[test]
    fn weekly_and_monthly_buckets() {
        // Saturdays for six weeks: weeks 47..52 of 2026, months Nov and Dec.
        let times: Vec<i64> = (0..6).map(|w| T0 + w * 7 * D).collect();
        assert_eq!(
            kept(
                &times,
                Keep {
                    weekly: Some(2),
                    ..Keep::default()
                }
            ),
            vec![times[4], times[5]]
        );
        assert_eq!(
            kept(
                &times,
                Keep {
                    monthly: Some(2),
                    ..Keep::default()
                }
            ),
            vec![times[1], times[5]]
        );
    }
}
