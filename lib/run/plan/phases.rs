//! A point's phases: processes grouped by what they wait for (`after`), ordered so that a
//! phase comes after every phase it waits for; a cycle or an unknown name is an error.

use std::collections::HashMap;

use super::{Phase, Proc};

/// Groups processes by what they wait for, in an order where a phase comes after those it
/// waits for; sets each process's phase.
pub(super) fn phases(
    procs: &mut [Proc],
    afters: &[Vec<String>],
    declared: &[&str],
) -> Result<Vec<Phase>, String> {
    for (p, after) in procs.iter().zip(afters) {
        for a in after {
            if !declared.contains(&a.as_str()) {
                return Err(format!("{} after {a:?}: no process has that name", p.name));
            }
            if *a == p.name {
                return Err(format!("{} cannot start after itself", p.name));
            }
        }
    }
    // A name's depth: 0 if none of its processes waits, else 1 + the deepest it waits for.
    let mut depth: HashMap<&str, usize> = HashMap::new();
    fn depth_of<'a>(
        name: &'a str,
        procs: &'a [Proc],
        afters: &'a [Vec<String>],
        depth: &mut HashMap<&'a str, usize>,
        visiting: &mut Vec<&'a str>,
    ) -> Result<usize, String> {
        if let Some(d) = depth.get(name) {
            return Ok(*d);
        }
        if visiting.contains(&name) {
            visiting.push(name);
            return Err(format!(
                "processes wait for each other: {}",
                visiting.join(" after ")
            ));
        }
        visiting.push(name);
        let mut d = 0;
        for (p, after) in procs.iter().zip(afters) {
            if p.name == name {
                for a in after {
                    d = d.max(1 + depth_of(a, procs, afters, depth, visiting)?);
                }
            }
        }
        visiting.pop();
        depth.insert(name, d);
        Ok(d)
    }
    let mut keys: Vec<(usize, &Vec<String>)> = Vec::new();
    for after in afters {
        let mut visiting = Vec::new();
        let mut d = 0;
        for a in after {
            d = d.max(1 + depth_of(a, procs, afters, &mut depth, &mut visiting)?);
        }
        if !keys.iter().any(|(_, k)| *k == after) {
            keys.push((d, after));
        }
    }
    keys.sort_by_key(|(d, _)| *d); // stable: plan order within a depth
    let mut phases: Vec<Phase> = keys
        .iter()
        .map(|(_, after)| Phase {
            names: Vec::new(),
            after: (*after).clone(),
        })
        .collect();
    let assigned: Vec<usize> = afters
        .iter()
        .map(|after| keys.iter().position(|(_, k)| *k == after).unwrap_or(0))
        .collect();
    for (p, k) in procs.iter_mut().zip(assigned) {
        p.phase = k;
        if !phases[k].names.contains(&p.name) {
            phases[k].names.push(p.name.clone());
        }
    }
    Ok(phases)
}
