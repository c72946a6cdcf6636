//! Statements that change only the client's own connection: `SET statement_timeout` in
//! every form PostgreSQL accepts, and `DEALLOCATE`, which drivers send to drop the
//! statements they prepared.
//!
//! The timeout is kept in the connection's metadata in milliseconds, where the query
//! guard and `SHOW statement_timeout` read it. An invalid value is rejected with SQLSTATE
//! 22023, as PostgreSQL does, so a client never believes a timeout is set when none is.

use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};
use datafusion_postgres::QueryHook;
use datafusion_postgres::hooks::HookClient;
use datafusion_postgres::pgwire::api::ClientInfo;
use datafusion_postgres::pgwire::api::results::{Response, Tag};
use datafusion_postgres::pgwire::api::store::PortalStore;
use datafusion_postgres::pgwire::error::{ErrorInfo, PgWireError, PgWireResult};

/// The metadata key under which datafusion-postgres keeps `statement_timeout`.
pub const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// Handles `SET statement_timeout` and `DEALLOCATE`; see the module docs.
#[derive(Debug)]
pub struct ClientStatements;

impl ClientStatements {
    fn respond(
        statement: &Statement,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        match statement {
            Statement::Deallocate { name, .. } => {
                if !name.value.eq_ignore_ascii_case("all") {
                    client.portal_store().rm_statement(&name.value);
                }
                Some(Ok(Response::Execution(Tag::new("DEALLOCATE"))))
            }
            statement => {
                let value = statement_timeout_value(statement)?;
                Some(parse_timeout_millis(&value).map(|millis| {
                    let metadata = client.metadata_mut();
                    if millis == 0 {
                        metadata.remove(STATEMENT_TIMEOUT_KEY);
                    } else {
                        metadata.insert(STATEMENT_TIMEOUT_KEY.to_string(), millis.to_string());
                    }
                    Response::Execution(Tag::new("SET"))
                }))
            }
        }
    }
}

/// Returns the value text of a `SET statement_timeout` statement, `None` for any other.
fn statement_timeout_value(statement: &Statement) -> Option<String> {
    let Statement::Set(Set::SingleAssignment {
        variable, values, ..
    }) = statement
    else {
        return None;
    };
    let name = variable.to_string().trim_matches('"').to_lowercase();
    if name != "statement_timeout" {
        return None;
    }
    let [value] = values.as_slice() else {
        return Some(String::new());
    };
    Some(match value {
        Expr::Value(value) => match &value.value {
            Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => text.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    })
}

/// Reads a timeout as PostgreSQL does: a number of milliseconds, or a number with one of
/// the units `us`, `ms`, `s`, `min`, `h`, `d`. `DEFAULT` and 0 mean none.
pub fn parse_timeout_millis(text: &str) -> PgWireResult<u64> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case("default") {
        return Ok(0);
    }
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let millis_per_unit = match unit.trim().to_lowercase().as_str() {
        "" | "ms" => 1.0,
        "us" => 0.001,
        "s" => 1_000.0,
        "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        _ => return Err(invalid_timeout(text)),
    };
    let number: f64 = number.parse().map_err(|_| invalid_timeout(text))?;
    let millis = (number * millis_per_unit).round();
    // PostgreSQL's limit for the setting: the largest 32-bit integer of milliseconds.
    if !millis.is_finite() || millis > f64::from(i32::MAX) {
        return Err(invalid_timeout(text));
    }
    Ok(millis as u64)
}

fn invalid_timeout(text: &str) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        "22023".to_string(),
        format!(
            "invalid value for parameter \"statement_timeout\": \"{text}\"; give \
             milliseconds, or a number with a unit (us, ms, s, min, h, d) such as '1500ms' or \
             '5min', at most 2147483647 ms; 0 turns the timeout off"
        ),
    )))
}

#[async_trait]
impl QueryHook for ClientStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::respond(statement, client)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _session_context: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        // Planned as an empty statement; the work happens when it runs.
        let handled = matches!(statement, Statement::Deallocate { .. })
            || statement_timeout_value(statement).is_some();
        handled.then(|| {
            Ok(LogicalPlan::EmptyRelation(
                datafusion::logical_expr::EmptyRelation {
                    produce_one_row: false,
                    schema: std::sync::Arc::new(datafusion::common::DFSchema::empty()),
                },
            ))
        })
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        _logical_plan: &LogicalPlan,
        _params: &ParamValues,
        _session_context: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        Self::respond(statement, client)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    #[test]
    fn timeout_forms_parse() {
        for (text, millis) in [
            ("1500", 1500),
            ("1500ms", 1500),
            ("1 s", 1000),
            ("0.5min", 30_000),
            ("1h", 3_600_000),
            ("1d", 86_400_000),
            ("100 ms", 100),
            ("2500us", 3),
            ("0", 0),
            ("DEFAULT", 0),
        ] {
            assert_eq!(parse_timeout_millis(text).unwrap(), millis, "{text}");
        }
    }

    #[test]
    fn invalid_timeouts_rejected() {
        for text in ["abc", "-1", "99999999999999999999", "5 parsecs", ""] {
            let Err(PgWireError::UserError(info)) = parse_timeout_millis(text) else {
                panic!("{text} was accepted");
            };
            assert_eq!(info.code, "22023");
        }
    }

    #[test]
    fn set_statement_spellings_found() {
        for (sql, value) in [
            ("SET statement_timeout = 1200", "1200"),
            ("SET SESSION statement_timeout TO '1 s'", "1 s"),
            ("SET \"statement_timeout\" = '2h'", "2h"),
            ("SET statement_timeout = DEFAULT", "DEFAULT"),
        ] {
            let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .unwrap()
                .remove(0);
            assert_eq!(
                statement_timeout_value(&statement).as_deref(),
                Some(value),
                "{sql}"
            );
        }
        let other = Parser::parse_sql(&PostgreSqlDialect {}, "SET search_path = x")
            .unwrap()
            .remove(0);
        assert_eq!(statement_timeout_value(&other), None);
    }
}
