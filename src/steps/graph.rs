//! The dependency graph of a pipeline's steps (README "Pipelines"): which step runs after
//! which, found from the binds (a bind that points into another step's `into` reads its
//! result) and the explicit `after` lists. Pure: compiled once from the settings, refused
//! with every problem named (a cycle, an unknown `after`, two steps merging at one place).

use crate::pointer::Pointer;

/// Most steps one pipeline may have (dependencies are kept as a 64-bit set).
pub const MAX_STEPS: usize = 64;

/// What a step's miss does to the record (mirrors `lookup.steps.NAME.on_miss`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissRule {
    /// `into` is `null`, the record goes on; dependents run (a bind reading the null result
    /// makes them skip).
    Emit,
    /// The record is dead-lettered naming the step.
    DeadLetter,
    /// `into` is `null` and every step depending on this one is skipped.
    SkipDependents,
}

/// One step as the graph needs it.
#[derive(Debug, Clone)]
pub struct StepSpec<'a> {
    pub name: &'a str,
    pub binds: &'a [String],
    pub after: &'a [String],
    pub into: &'a str,
    pub on_miss: MissRule,
}

/// Why a set of steps does not make a pipeline. Each names the steps (and the key).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    #[error("lookup.steps.{0}: a step name is made of a-z, 0-9 and _ only")]
    BadName(String),
    #[error("lookup.steps: at most {MAX_STEPS} steps, got {0}")]
    TooMany(usize),
    #[error("lookup.steps.{step}.{key}: {message}")]
    Pointer {
        step: String,
        key: &'static str,
        message: String,
    },
    #[error("lookup.steps.{step}.after: no step is named `{after}`")]
    UnknownAfter { step: String, after: String },
    #[error(
        "lookup.steps.{first}.into and lookup.steps.{second}.into: both merge at `{into}` (each step needs a place of its own)"
    )]
    SameInto {
        first: String,
        second: String,
        into: String,
    },
    #[error(
        "lookup.steps.{inner}.into `{inner_into}` lies inside lookup.steps.{outer}.into `{outer_into}` (one result would overwrite the other)"
    )]
    NestedInto {
        inner: String,
        inner_into: String,
        outer: String,
        outer_into: String,
    },
    #[error("lookup.steps: the steps depend on each other in a cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// A compiled pipeline: steps in configuration order, each with its direct dependencies.
#[derive(Debug, Clone)]
pub struct Graph {
    names: Vec<String>,
    into: Vec<Pointer>,
    binds: Vec<Vec<Pointer>>,
    /// Per bind: the step whose result it reads, if any.
    bind_sources: Vec<Vec<Option<usize>>>,
    /// Direct dependencies as a bit set over step indices.
    deps: Vec<u64>,
    miss: Vec<MissRule>,
    /// Every step reachable downstream (dependents, transitively), as a bit set.
    downstream: Vec<u64>,
}

/// Whether `a`'s tokens start with `b`'s (or the other way round): a value read at one
/// contains, or lies inside, what is written at the other.
fn overlaps(a: &Pointer, b: &Pointer) -> bool {
    let (a, b) = (a.tokens(), b.tokens());
    let n = a.len().min(b.len());
    a[..n] == b[..n]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Graph {
    /// Compile `specs` (configuration order), reporting every problem.
    pub fn compile(specs: &[StepSpec<'_>]) -> Result<Graph, Vec<GraphError>> {
        let mut errors = Vec::new();
        if specs.len() > MAX_STEPS {
            return Err(vec![GraphError::TooMany(specs.len())]);
        }
        for s in specs {
            if !valid_name(s.name) {
                errors.push(GraphError::BadName(s.name.to_string()));
            }
        }
        let parse = |s: &StepSpec<'_>, key: &'static str, text: &str, errors: &mut Vec<_>| {
            Pointer::parse(text)
                .map_err(|e| {
                    errors.push(GraphError::Pointer {
                        step: s.name.to_string(),
                        key,
                        message: e.to_string(),
                    })
                })
                .ok()
        };
        let mut into = Vec::new();
        let mut binds = Vec::new();
        for s in specs {
            let i = parse(s, "into", s.into, &mut errors);
            if let Some(p) = &i
                && p.tokens().is_empty()
            {
                errors.push(GraphError::Pointer {
                    step: s.name.to_string(),
                    key: "into",
                    message: "must name a member (not the whole record)".into(),
                });
            }
            into.push(i.unwrap_or_else(|| Pointer::parse("/_").unwrap_or_else(|_| unreachable!())));
            binds.push(
                s.binds
                    .iter()
                    .filter_map(|b| parse(s, "binds", b, &mut errors))
                    .collect::<Vec<_>>(),
            );
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for a in 0..specs.len() {
            for b in a + 1..specs.len() {
                if into[a] == into[b] {
                    errors.push(GraphError::SameInto {
                        first: specs[a].name.into(),
                        second: specs[b].name.into(),
                        into: into[a].as_str().into(),
                    });
                } else if overlaps(&into[a], &into[b]) {
                    let (inner, outer) = if into[a].tokens().len() > into[b].tokens().len() {
                        (a, b)
                    } else {
                        (b, a)
                    };
                    errors.push(GraphError::NestedInto {
                        inner: specs[inner].name.into(),
                        inner_into: into[inner].as_str().into(),
                        outer: specs[outer].name.into(),
                        outer_into: into[outer].as_str().into(),
                    });
                }
            }
        }
        let mut deps = vec![0u64; specs.len()];
        let mut bind_sources = Vec::new();
        for (i, s) in specs.iter().enumerate() {
            let sources: Vec<Option<usize>> = binds[i]
                .iter()
                .map(|b| (0..specs.len()).find(|&j| overlaps(b, &into[j])))
                .collect();
            for j in sources.iter().flatten() {
                deps[i] |= 1 << j;
            }
            bind_sources.push(sources);
            for a in s.after {
                match specs.iter().position(|t| t.name == a) {
                    Some(j) => deps[i] |= 1 << j,
                    None => errors.push(GraphError::UnknownAfter {
                        step: s.name.into(),
                        after: a.clone(),
                    }),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        if let Some(cycle) = find_cycle(&deps) {
            return Err(vec![GraphError::Cycle(
                cycle
                    .into_iter()
                    .map(|i| specs[i].name.to_string())
                    .collect(),
            )]);
        }
        let downstream = (0..specs.len())
            .map(|i| {
                // Fixed point over the (acyclic) dependents relation.
                let mut set = 0u64;
                let mut frontier = 1u64 << i;
                while frontier != 0 {
                    let mut next = 0u64;
                    for (k, d) in deps.iter().enumerate() {
                        if d & frontier != 0 && set & (1 << k) == 0 {
                            next |= 1 << k;
                        }
                    }
                    set |= next;
                    frontier = next;
                }
                set
            })
            .collect();
        Ok(Graph {
            names: specs.iter().map(|s| s.name.to_string()).collect(),
            into,
            binds,
            bind_sources,
            deps,
            miss: specs.iter().map(|s| s.on_miss).collect(),
            downstream,
        })
    }

    /// Number of steps.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether there are no steps.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Step `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.names[i]
    }

    /// Where step `i`'s result is merged.
    pub fn into_pointer(&self, i: usize) -> &Pointer {
        &self.into[i]
    }

    /// Step `i`'s binds.
    pub fn binds(&self, i: usize) -> &[Pointer] {
        &self.binds[i]
    }

    /// For each bind of step `i`, the step whose result it reads (`None`: the record).
    pub fn bind_sources(&self, i: usize) -> &[Option<usize>] {
        &self.bind_sources[i]
    }

    /// Whether step `i` reads anything another step writes (then it is looked up against
    /// the record with those results merged).
    pub fn reads_results(&self, i: usize) -> bool {
        self.bind_sources[i].iter().any(Option::is_some)
    }

    /// Step `i`'s direct dependencies (bit set).
    pub fn deps(&self, i: usize) -> u64 {
        self.deps[i]
    }

    /// Every step that depends on `i`, directly or not (bit set).
    pub fn downstream(&self, i: usize) -> u64 {
        self.downstream[i]
    }

    /// What step `i`'s miss does.
    pub fn miss_rule(&self, i: usize) -> MissRule {
        self.miss[i]
    }

    /// The index of the step named `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }
}

/// A cycle in the dependency relation (as step indices, first repeated at the end), if any.
fn find_cycle(deps: &[u64]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    fn visit(i: usize, deps: &[u64], marks: &mut [Mark], path: &mut Vec<usize>) -> bool {
        marks[i] = Mark::OnPath;
        path.push(i);
        for j in 0..deps.len() {
            if deps[i] & (1 << j) == 0 {
                continue;
            }
            let mark = marks[j];
            match mark {
                Mark::OnPath => {
                    let start = path.iter().position(|&p| p == j).unwrap_or(0);
                    path.drain(..start);
                    path.push(j);
                    return true;
                }
                Mark::New if visit(j, deps, marks, path) => return true,
                _ => {}
            }
        }
        path.pop();
        marks[i] = Mark::Done;
        false
    }
    let mut marks = vec![Mark::New; deps.len()];
    for i in 0..deps.len() {
        let mut path = Vec::new();
        if marks[i] == Mark::New && visit(i, deps, &mut marks, &mut path) {
            // The path runs along "depends on": show it in running order.
            path.reverse();
            return Some(path);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(
        name: &'a str,
        binds: &'a [String],
        after: &'a [String],
        into: &'a str,
    ) -> StepSpec<'a> {
        StepSpec {
            name,
            binds,
            after,
            into,
            on_miss: MissRule::Emit,
        }
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn binds_into_a_result_make_a_dependency_and_independent_steps_have_none() {
        let (b_user, b_acct, b_geo, none) = (
            v(&["/user_id"]),
            v(&["/user/account_id"]),
            v(&["/ip"]),
            v(&[]),
        );
        let g = Graph::compile(&[
            spec("user", &b_user, &none, "/user"),
            spec("account", &b_acct, &none, "/account"),
            spec("geo", &b_geo, &none, "/geo"),
        ])
        .unwrap();
        assert_eq!(g.deps(0), 0);
        assert_eq!(g.deps(1), 0b001);
        assert_eq!(g.deps(2), 0);
        assert_eq!(g.bind_sources(1), &[Some(0)]);
        assert!(g.reads_results(1) && !g.reads_results(0));
        assert_eq!(g.downstream(0), 0b010);
        assert_eq!(g.downstream(2), 0);
    }

    #[test]
    fn after_adds_a_dependency_and_downstream_is_transitive() {
        let none = v(&[]);
        let (a1, a2) = (v(&["a"]), v(&["b"]));
        let g = Graph::compile(&[
            spec("a", &none, &none, "/a"),
            spec("b", &none, &a1, "/b"),
            spec("c", &none, &a2, "/c"),
        ])
        .unwrap();
        assert_eq!(g.deps(2), 0b010);
        assert_eq!(g.downstream(0), 0b110);
    }

    #[test]
    fn refusals_name_the_steps() {
        let none = v(&[]);
        let (ab, bb) = (v(&["/b/x"]), v(&["/a/y"]));
        let err = Graph::compile(&[spec("a", &ab, &none, "/a"), spec("b", &bb, &none, "/b")])
            .unwrap_err();
        assert_eq!(err.len(), 1);
        let msg = err[0].to_string();
        assert!(
            msg.contains("cycle") && msg.contains("a -> b -> a") || msg.contains("b -> a -> b"),
            "{msg}"
        );

        let ghost = v(&["ghost"]);
        let err = Graph::compile(&[spec("a", &none, &ghost, "/a")]).unwrap_err();
        assert_eq!(
            err[0].to_string(),
            "lookup.steps.a.after: no step is named `ghost`"
        );

        let err = Graph::compile(&[spec("a", &none, &none, "/x"), spec("b", &none, &none, "/x")])
            .unwrap_err();
        assert!(
            err[0]
                .to_string()
                .contains("lookup.steps.a.into and lookup.steps.b.into")
        );

        let err = Graph::compile(&[
            spec("a", &none, &none, "/x"),
            spec("b", &none, &none, "/x/y"),
        ])
        .unwrap_err();
        assert!(matches!(&err[0], GraphError::NestedInto { inner, .. } if inner == "b"));

        let err = Graph::compile(&[spec("Bad-Name", &none, &none, "/x")]).unwrap_err();
        assert_eq!(err, vec![GraphError::BadName("Bad-Name".into())]);

        let own = v(&["/a/id"]);
        let err = Graph::compile(&[spec("a", &own, &none, "/a")]).unwrap_err();
        assert_eq!(err, vec![GraphError::Cycle(v(&["a", "a"]))]);

        let err = Graph::compile(&[spec("a", &none, &none, "")]).unwrap_err();
        assert!(err[0].to_string().starts_with("lookup.steps.a.into:"));
    }
}
