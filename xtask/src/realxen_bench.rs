//! The table of `cargo xtask realxen bench`: what scenario `bench` printed on the console
//! (`REALXEN-BENCH <guest> <op> <xen|xenmig> <round> <seconds> [<downtime>]`, see
//! realxen/dom0-init.sh), as each operation's best and median time with both helpers, the
//! ratio Xen's time / xenmig's time, and the migrations' downtime.
//!
//! Targets: xenmig's `xl save` and `xl restore` at least as fast as with Xen's helper
//! (ratio ≥ 1.0), its live migration no longer in total, and its downtime no longer.

use std::collections::BTreeMap;

/// One timed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub guest: String,
    pub op: String,
    pub helper: String,
    pub round: u32,
    pub seconds: f64,
    pub downtime: Option<f64>,
}

/// Every `REALXEN-BENCH-NOTE <guest> <op>: <why>` line of a console log: operations this Xen
/// cannot do with either helper, as (guest, op, line).
pub fn notes(serial: &str) -> Vec<(String, String, String)> {
    serial
        .lines()
        .filter_map(|line| {
            let p = line.find("REALXEN-BENCH-NOTE ")?;
            let rest = line[p + 19..].trim();
            let mut w = rest.split_whitespace();
            let guest = w.next()?.to_string();
            let op = w.next()?.trim_end_matches(':').to_string();
            Some((guest, op, rest.to_string()))
        })
        .collect()
}

/// Every `REALXEN-BENCH` line of a console log.
pub fn parse(serial: &str) -> Vec<Sample> {
    serial
        .lines()
        .filter_map(|line| {
            let p = line.find("REALXEN-BENCH ")?;
            let w: Vec<&str> = line[p + 14..].split_whitespace().collect();
            if w.len() < 5 {
                return None;
            }
            Some(Sample {
                guest: w[0].to_string(),
                op: w[1].to_string(),
                helper: w[2].to_string(),
                round: w[3].parse().ok()?,
                seconds: w[4].parse().ok()?,
                downtime: w.get(5).and_then(|d| d.parse().ok()),
            })
        })
        .collect()
}

fn best(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::min)
}

fn median(v: &[f64]) -> Option<f64> {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => None,
        n if n % 2 == 1 => Some(v[n / 2]),
        n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |t| format!("{t:.2}"))
}

/// The Markdown table and the targets missed (empty when every target was met). A target
/// with fewer than `min_rounds` rounds for either helper counts as missed.
pub fn table(samples: &[Sample], min_rounds: usize) -> (String, Vec<String>) {
    // (guest, op) in the order they ran → helper → times, downtimes.
    let mut order: Vec<(String, String)> = Vec::new();
    type Times = (Vec<f64>, Vec<f64>);
    let mut by: BTreeMap<(String, String, String), Times> = BTreeMap::new();
    for s in samples {
        let k = (s.guest.clone(), s.op.clone());
        if !order.contains(&k) {
            order.push(k);
        }
        let e = by
            .entry((s.guest.clone(), s.op.clone(), s.helper.clone()))
            .or_default();
        e.0.push(s.seconds);
        e.1.extend(s.downtime);
    }
    let mut md = String::from(
        "| guest | operation | rounds | Xen's helper best / median (s) | xenmig best / median (s) | Xen / xenmig (best) | downtime Xen / xenmig (best, s) | target | met |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    let mut missed = Vec::new();
    let empty: Times = (Vec::new(), Vec::new());
    for (guest, op) in &order {
        let get = |h: &str| by.get(&(guest.clone(), op.clone(), h.to_string()));
        let x = get("xen").unwrap_or(&empty);
        let m = get("xenmig").unwrap_or(&empty);
        let rounds = x.0.len().min(m.0.len());
        let ratio = match (best(&x.0), best(&m.0)) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b),
            _ => None,
        };
        let (dx, dm) = (best(&x.1), best(&m.1));
        let mut met = rounds >= min_rounds && ratio.is_some_and(|r| r >= 1.0);
        let target = if op == "migrate" {
            met &= matches!((dx, dm), (Some(a), Some(b)) if b <= a);
            "total ≤ Xen's, downtime ≤ Xen's"
        } else {
            "≥ 1.0×"
        };
        if !met {
            missed.push(format!(
                "{guest} {op}: ratio {}{} over {rounds} rounds",
                ratio.map_or("-".into(), |r| format!("{r:.2}×")),
                if op == "migrate" {
                    format!(", downtime {} vs Xen's {}", secs(dm), secs(dx))
                } else {
                    String::new()
                }
            ));
        }
        md.push_str(&format!(
            "| {guest} | {op} | {rounds} | {} / {} | {} / {} | {} | {} | {target} | {} |\n",
            secs(best(&x.0)),
            secs(median(&x.0)),
            secs(best(&m.0)),
            secs(median(&m.0)),
            ratio.map_or("-".into(), |r| format!("{r:.2}×")),
            if op == "migrate" {
                format!("{} / {}", secs(dx), secs(dm))
            } else {
                "".into()
            },
            if met { "yes" } else { "**no**" }
        ));
    }
    (md, missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_best_median_and_ratio() {
        let log = "\
(XEN) noise
REALXEN-BENCH pv64 save xen 1 5.00
REALXEN-BENCH pv64 save xenmig 1 4.00
REALXEN[3s] bench pv64 round 2: xenmig
REALXEN-BENCH pv64 save xenmig 2 6.00
REALXEN-BENCH pv64 save xen 2 4.50
REALXEN-BENCH pv64 migrate xen 1 9.00 0.50
REALXEN-BENCH pv64 migrate xenmig 1 8.00 0.70
REALXEN-BENCH pv64 migrate xen 2 10.00 0.40
REALXEN-BENCH pv64 migrate xenmig 2 8.50 -
";
        let s = parse(log);
        assert_eq!(s.len(), 8);
        assert_eq!(s[6].downtime, Some(0.4));
        assert_eq!(s[7].downtime, None);
        let (md, missed) = table(&s, 2);
        assert!(
            md.contains("| pv64 | save | 2 | 4.50 / 4.75 | 4.00 / 5.00 | 1.12× |"),
            "{md}"
        );
        // Faster in total, but the guest stopped longer: missed.
        assert!(md.contains("| 0.40 / 0.70 |"), "{md}");
        assert_eq!(missed.len(), 1, "{missed:?}");
        assert!(
            missed[0].starts_with("pv64 migrate: ratio 1.12×"),
            "{missed:?}"
        );
        // Too few rounds misses every target.
        assert_eq!(table(&s, 3).1.len(), 2);
    }
}
