//! Hints for analysts' SQL errors about names: a dataset name that needs quotes, a
//! missing version schema, a misspelt dataset, version or table. The hint is added to
//! DataFusion's message, which stays as it is.

use crate::sql::graph::closest;

/// Tables of every version schema.
const VERSION_TABLES: [&str; 2] = ["samples", "skips"];

/// Returns whether `name` is a version schema: `latest` or `v<N>`.
fn is_version_schema(name: &str) -> bool {
    name == "latest"
        || name
            .strip_prefix('v')
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// Returns a hint for `error`, raised by `query` over a data directory with `datasets`.
pub fn name_hint(query: &str, error: &str, datasets: &[String]) -> Option<String> {
    if let Some(name) = unquoted_dataset(query, datasets) {
        return Some(format!(
            "dataset names with characters other than letters, digits and '_' need double \
             quotes: \"{name}\".latest.samples"
        ));
    }
    let missing = error.split("table '").nth(1)?.split('\'').next()?;
    let parts: Vec<&str> = missing.split('.').collect();
    let known = |name: &str| datasets.iter().any(|d| d == name);
    match parts.as_slice() {
        ["datafusion", dataset, table] if known(dataset) => Some(format!(
            "name a version between the dataset and the table: \"{dataset}\".latest.{table} or \
             \"{dataset}\".v<N>.{table}"
        )),
        ["datafusion", schema, table] if is_version_schema(schema) => Some(format!(
            "name the dataset before the version: \"<dataset>\".{schema}.{table}; datasets: {}",
            if datasets.is_empty() {
                "none yet (publish one with `paperclip run`)".to_string()
            } else {
                datasets.join(", ")
            }
        )),
        [dataset, schema, table] if known(dataset) => version_hint(dataset, schema, table),
        [dataset, _, _] if *dataset != "paperclip" && *dataset != "datafusion" => {
            let names: Vec<&str> = datasets.iter().map(String::as_str).collect();
            let suggestion = closest(dataset, &names)
                .map(|name| format!("did you mean \"{name}\"? "))
                .unwrap_or_default();
            Some(format!(
                "there is no dataset {dataset:?}; {suggestion}datasets: {}",
                if names.is_empty() {
                    "none yet (publish one with `paperclip run`)".to_string()
                } else {
                    names.join(", ")
                }
            ))
        }
        _ => None,
    }
}

fn version_hint(dataset: &str, schema: &str, table: &str) -> Option<String> {
    if let Some(digits) = schema.strip_prefix('v')
        && let Ok(number) = digits.parse::<u64>()
        && digits != number.to_string()
    {
        return Some(format!(
            "versions are named v<N> without leading zeros: \"{dataset}\".v{number}.{table}"
        ));
    }
    let is_version = schema == "latest"
        || schema
            .strip_prefix('v')
            .is_some_and(|d| d.parse::<u64>().is_ok());
    if !is_version {
        return Some(format!(
            "the schemas of a dataset are latest and v<N>, not {schema:?}: \
             \"{dataset}\".latest.{table}"
        ));
    }
    let suggestion = closest(table, &VERSION_TABLES)
        .map(|name| format!("did you mean {name}? "))
        .unwrap_or_default();
    Some(format!(
        "{suggestion}the tables of a version are {}",
        VERSION_TABLES.join(" and ")
    ))
}

/// Finds a dataset whose name needs quotes and appears in the query without them.
fn unquoted_dataset<'a>(query: &str, datasets: &'a [String]) -> Option<&'a str> {
    datasets
        .iter()
        .filter(|name| !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .find(|name| {
            let unquoted = query.replace(&format!("\"{name}\""), "");
            unquoted.contains(&format!("{name}."))
        })
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hint(query: &str, error: &str) -> String {
        name_hint(query, error, &["hst-paperclip".to_string()]).unwrap_or_default()
    }

    #[test]
    fn version_without_dataset_hinted() {
        let text = hint(
            "SELECT * FROM latest.samples",
            "Error during planning: table 'datafusion.latest.samples' not found",
        );

        assert!(
            text.contains("name the dataset before the version"),
            "{text}"
        );
        assert!(text.contains("datasets: hst-paperclip"), "{text}");
    }

    #[test]
    fn names_the_fix_for_each_mistake() {
        assert!(
            hint("SELECT 1 FROM hst-paperclip.v1.samples", "ParserError").contains("double quotes")
        );
        assert!(
            hint("q", "table 'datafusion.hst-paperclip.samples' not found")
                .contains("\"hst-paperclip\".latest.samples")
        );
        assert!(hint("q", "table 'hst-paperclip.v01.samples' not found").contains(".v1.samples"));
        assert!(
            hint("q", "table 'hst-paperclip.v1.sample' not found")
                .contains("did you mean samples?")
        );
        assert!(
            hint("q", "table 'hst_paperclip.v1.samples' not found")
                .contains("did you mean \"hst-paperclip\"?")
        );
        assert_eq!(hint("SELECT 1", "Division by zero"), "");
    }
}
