//! A plan's `[sweep]` table: the data points of an experiment, each a set of variable
//! values, named so that each gets a directory of its own.
//!
//! ```toml
//! [sweep]
//! clients = [8, 16, 24]        # every other key is a variable and a list of values:
//! rate = ["low", "high"]       # the points are their cartesian product (6 here)
//! repeat = 2                   # optional: the whole list twice ({repeat} = 0, 1)
//! name = "c{clients}-{rate}"   # optional: the point's name (default clients-8_rate-low)
//! ```
//!
//! or explicit points, instead of lists: `points = [{ clients = 8, rate = "low" }, …]`.

use std::collections::{HashMap, HashSet};

use super::plan::expand;

/// One data point: its name (a directory name), its values in [`Sweep::vars`] order, and
/// which repetition it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PointSpec {
    pub name: String,
    pub values: Vec<String>,
    pub repeat: u32,
}

/// Every point of a sweep, in the order they run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sweep {
    pub vars: Vec<String>,
    pub points: Vec<PointSpec>,
}

/// Names a sweep variable cannot take: they mean something in every template.
pub(crate) const BUILTIN: &[&str] = &["i", "n", "host", "name", "point", "repeat"];

impl Sweep {
    /// No `[sweep]`: a single point called `run`.
    pub(crate) fn single() -> Sweep {
        Sweep {
            vars: Vec::new(),
            points: vec![PointSpec {
                name: "run".into(),
                values: Vec::new(),
                repeat: 0,
            }],
        }
    }

    /// The template values of point `k`: its variables, `{point}` and `{repeat}`.
    pub(crate) fn values(&self, k: usize) -> HashMap<String, String> {
        let p = &self.points[k];
        let mut values: HashMap<String, String> =
            self.vars.iter().cloned().zip(p.values.clone()).collect();
        values.insert("point".into(), p.name.clone());
        values.insert("repeat".into(), p.repeat.to_string());
        values
    }
}

/// A TOML scalar as template text.
pub(crate) fn value_text(v: &toml::Value) -> Result<String, String> {
    match v {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_) => {
            Ok(v.to_string())
        }
        other => Err(format!("{other} is not a single value")),
    }
}

/// Reads a `[sweep]` table.
pub(crate) fn parse(table: &toml::Table) -> Result<Sweep, String> {
    let repeat = match table.get("repeat") {
        None => 1,
        Some(toml::Value::Integer(k)) if *k >= 1 => *k as u32,
        Some(other) => return Err(format!("sweep: repeat = {other}: give a whole number ≥ 1")),
    };
    let name = match table.get("name") {
        None => None,
        Some(toml::Value::String(s)) => Some(s.clone()),
        Some(other) => return Err(format!("sweep: name = {other}: give a template string")),
    };
    let lists: Vec<(&String, &toml::Value)> = table
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "repeat" | "name" | "points"))
        .collect();
    let (vars, combos) = match table.get("points") {
        Some(points) if lists.is_empty() => explicit(points)?,
        Some(_) => {
            return Err(
                "sweep: give either lists of values or `points`, not both (lists make every combination)".into(),
            );
        }
        None => product(&lists)?,
    };
    for v in &vars {
        check_var_name(v)?;
    }
    if combos.is_empty() {
        return Err("sweep: no points (a list of values is empty)".into());
    }
    let mut points = Vec::new();
    for r in 0..repeat {
        for values in &combos {
            let name = point_name(&vars, values, r, repeat, name.as_deref())?;
            points.push(PointSpec {
                name,
                values: values.clone(),
                repeat: r,
            });
        }
    }
    let mut seen = HashSet::new();
    for p in &points {
        if !seen.insert(&p.name) {
            return Err(format!(
                "sweep: two points are named {:?}; each needs a directory of its own (put every variable, and {{repeat}}, in `name`)",
                p.name
            ));
        }
    }
    Ok(Sweep { vars, points })
}

fn check_var_name(v: &str) -> Result<(), String> {
    if BUILTIN.contains(&v) {
        return Err(format!(
            "sweep: a variable cannot be called {v:?}: {{{v}}} is built in"
        ));
    }
    if v.is_empty() || v.contains(['{', '}']) {
        return Err(format!("sweep: {v:?} is not a usable variable name"));
    }
    Ok(())
}

/// Lists of values: every combination, the first variable changing slowest.
fn product(lists: &[(&String, &toml::Value)]) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut vars = Vec::new();
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for (name, value) in lists {
        let toml::Value::Array(items) = value else {
            return Err(format!(
                "sweep: {name} = {value}: give a list of values, e.g. {name} = [1, 2, 4]"
            ));
        };
        let texts = items
            .iter()
            .map(value_text)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("sweep: {name}: {e}"))?;
        vars.push(name.to_string());
        combos = combos
            .iter()
            .flat_map(|c| {
                texts.iter().map(move |t| {
                    let mut c = c.clone();
                    c.push(t.clone());
                    c
                })
            })
            .collect();
    }
    if vars.is_empty() {
        return Err("sweep: no variables (add e.g. clients = [8, 16])".into());
    }
    Ok((vars, combos))
}

/// `points = [{…}, {…}]`: each table one point; all name the same variables.
fn explicit(points: &toml::Value) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let toml::Value::Array(items) = points else {
        return Err("sweep: points must be a list of tables, e.g. [{ clients = 8 }]".into());
    };
    let mut vars: Option<Vec<String>> = None;
    let mut combos = Vec::new();
    for (k, item) in items.iter().enumerate() {
        let toml::Value::Table(t) = item else {
            return Err(format!("sweep: point {} is not a table", k + 1));
        };
        let names: Vec<String> = t.keys().cloned().collect();
        match &vars {
            None => vars = Some(names),
            Some(v) if *v != names => {
                return Err(format!(
                    "sweep: point {} names {names:?}, the first names {v:?}: every point needs the same variables",
                    k + 1
                ));
            }
            Some(_) => {}
        }
        combos.push(
            t.iter()
                .map(|(name, v)| {
                    value_text(v).map_err(|e| format!("sweep: point {}: {name}: {e}", k + 1))
                })
                .collect::<Result<Vec<_>, _>>()?,
        );
    }
    Ok((vars.unwrap_or_default(), combos))
}

/// The point's directory name: the `name` template, or `var-value_var-value`, with
/// anything unsafe in a file name replaced.
fn point_name(
    vars: &[String],
    values: &[String],
    repeat: u32,
    repeats: u32,
    template: Option<&str>,
) -> Result<String, String> {
    let raw = match template {
        Some(t) => {
            let mut map: HashMap<String, String> =
                vars.iter().cloned().zip(values.iter().cloned()).collect();
            map.insert("repeat".into(), repeat.to_string());
            expand(t, &map).map_err(|e| format!("sweep: name: {e}"))?
        }
        None => {
            let mut parts: Vec<String> = vars
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}-{v}"))
                .collect();
            if repeats > 1 {
                parts.push(format!("r{repeat}"));
            }
            parts.join("_")
        }
    };
    let safe: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+=,-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.is_empty() || safe.starts_with('.') {
        return Err(format!(
            "sweep: a point's name {raw:?} is not a usable directory name"
        ));
    }
    Ok(safe)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sweep(text: &str) -> Result<Sweep, String> {
        let t: toml::Table = toml::from_str(text).unwrap();
        parse(&t)
    }

    #[test]
    fn lists_make_every_combination_in_order() {
        let s = sweep("clients = [1, 2]\nrate = [\"lo\", \"hi\"]\n").unwrap();
        assert_eq!(s.vars, ["clients", "rate"]);
        let names: Vec<&str> = s.points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "clients-1_rate-lo",
                "clients-1_rate-hi",
                "clients-2_rate-lo",
                "clients-2_rate-hi"
            ]
        );
        assert_eq!(s.points[1].values, ["1", "hi"]);
        let v = s.values(3);
        assert_eq!(v["clients"], "2");
        assert_eq!(v["point"], "clients-2_rate-hi");
        assert_eq!(v["repeat"], "0");
    }

    #[test]
    fn repeats_run_the_whole_list_again() {
        let s = sweep("clients = [1, 2]\nrepeat = 2\n").unwrap();
        let names: Vec<(&str, u32)> = s
            .points
            .iter()
            .map(|p| (p.name.as_str(), p.repeat))
            .collect();
        assert_eq!(
            names,
            [
                ("clients-1_r0", 0),
                ("clients-2_r0", 0),
                ("clients-1_r1", 1),
                ("clients-2_r1", 1)
            ]
        );
    }

    #[test]
    fn explicit_points_and_name_templates() {
        let s = sweep(
            "name = \"c{clients}/{per_host}\"\npoints = [{ clients = 8, per_host = 2 }, { clients = 24, per_host = 6 }]\n",
        )
        .unwrap();
        assert_eq!(s.vars, ["clients", "per_host"]);
        assert_eq!(s.points[1].values, ["24", "6"]);
        // A slash would make a sub-directory: it is replaced.
        assert_eq!(s.points[0].name, "c8_2");
    }

    #[test]
    fn mistakes_are_reported() {
        assert!(
            sweep("clients = 3\n")
                .unwrap_err()
                .contains("list of values")
        );
        assert!(sweep("host = [1]\n").unwrap_err().contains("built in"));
        assert!(sweep("clients = []\n").unwrap_err().contains("no points"));
        assert!(sweep("repeat = 2\n").unwrap_err().contains("no variables"));
        assert!(
            sweep("clients = [1, 2]\nname = \"same\"\n")
                .unwrap_err()
                .contains("two points")
        );
        assert!(
            sweep("clients = [1]\npoints = [{ clients = 2 }]\n")
                .unwrap_err()
                .contains("not both")
        );
        assert!(
            sweep("points = [{ a = 1 }, { b = 2 }]\n")
                .unwrap_err()
                .contains("same variables")
        );
        assert!(
            sweep("name = \"..\"\nclients = [1]\n")
                .unwrap_err()
                .contains("directory name")
        );
        assert!(
            sweep("clients = [[1]]\n")
                .unwrap_err()
                .contains("single value")
        );
    }
}
