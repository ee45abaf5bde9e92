//! Finding an aggregation by its path of names, in a request (to rewrite it) and in a
//! result (to put back what a rewrite took out): the pieces every aggregation rewrite of
//! the receiving node (`calendar`, `agg_filters`, `pipeline`, `top_hits`, `meta`,
//! `format`) shares.

use serde_json::Value;

/// What [`visit`] calls on each aggregation: its path of names and its definition.
pub type Visitor<'a, E> = dyn FnMut(&[String], &mut Value) -> Result<(), E> + 'a;

/// Calls `f(path, agg)` on every aggregation of a request (`{"name": {...}}`), parents
/// before their `aggs`/`aggregations`, stopping at the first error.
pub fn visit<E>(aggs: &mut Value, f: &mut Visitor<'_, E>) -> Result<(), E> {
    fn walk<E>(aggs: &mut Value, path: &mut Vec<String>, f: &mut Visitor<'_, E>) -> Result<(), E> {
        let Some(obj) = aggs.as_object_mut() else {
            return Ok(());
        };
        for (name, agg) in obj.iter_mut() {
            path.push(name.clone());
            f(path, agg)?;
            for key in ["aggs", "aggregations"] {
                if let Some(sub) = agg.get_mut(key) {
                    walk(sub, path, f)?;
                }
            }
            path.pop();
        }
        Ok(())
    }
    walk(aggs, &mut Vec::new(), f)
}

/// Calls `f` on the result of the aggregation at `path` (names from the root), in every
/// bucket of its parents.
pub fn for_each_at(node: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(agg) = node.get_mut(first) else {
        return;
    };
    if rest.is_empty() {
        f(agg);
        return;
    }
    // Through every bucket of an enclosing bucket aggregation (list or keyed).
    match agg.get_mut("buckets") {
        Some(Value::Array(b)) => b.iter_mut().for_each(|b| for_each_at(b, rest, f)),
        Some(Value::Object(b)) => b.values_mut().for_each(|b| for_each_at(b, rest, f)),
        _ => for_each_at(agg, rest, f),
    }
}

/// Calls `f` on each object holding the sub-aggregations of the aggregation at `path`:
/// the result's root for an empty path, else every bucket of that aggregation.
pub fn for_each_level(node: &mut Value, path: &[String], f: &mut dyn FnMut(&mut Value)) {
    if path.is_empty() {
        f(node);
        return;
    }
    for_each_at(node, path, &mut |agg| match agg.get_mut("buckets") {
        Some(Value::Array(b)) => b.iter_mut().for_each(&mut *f),
        Some(Value::Object(b)) => b.values_mut().for_each(&mut *f),
        _ => f(agg),
    });
}
