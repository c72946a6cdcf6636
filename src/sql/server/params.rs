//! Parameter types that clients declare when they prepare a statement.
//!
//! datafusion-postgres types a parameter from its context alone: in `3 * $1` the
//! parameter becomes an integer, so a client's `numeric` 0.5 is read as 0. PostgreSQL
//! uses the type the client declares in its Parse message when there is one.
//! [`DeclaredTypes`] wraps datafusion-postgres's parser and writes those types into the
//! statement as casts (`CAST($1 AS NUMERIC)`) before it is planned, so the value keeps
//! its type and the expression around it is typed from it.

use std::borrow::Cow;
use std::ops::ControlFlow;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::sql::sqlparser::ast::{
    CastKind, DataType, ExactNumberInfo, Expr, TimezoneInfo, Value, visit_expressions_mut,
};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser as SqlParser;
use datafusion_postgres::Parser;
use datafusion_postgres::pgwire::api::portal::Format;
use datafusion_postgres::pgwire::api::results::FieldInfo;
use datafusion_postgres::pgwire::api::stmt::QueryParser;
use datafusion_postgres::pgwire::api::{ClientInfo, Type};
use datafusion_postgres::pgwire::error::PgWireResult;

/// datafusion-postgres's parser, with the client's declared parameter types as casts.
pub struct DeclaredTypes {
    inner: Arc<Parser>,
}

impl DeclaredTypes {
    pub fn new(inner: Arc<Parser>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl QueryParser for DeclaredTypes {
    type Statement = <Parser as QueryParser>::Statement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let sql = with_declared_casts(sql, types);
        self.inner.parse_sql(client, &sql, types).await
    }

    fn get_parameter_types(&self, statement: &Self::Statement) -> PgWireResult<Vec<Type>> {
        self.inner.get_parameter_types(statement)
    }

    fn get_result_schema(
        &self,
        statement: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        self.inner.get_result_schema(statement, column_format)
    }
}

/// Returns `sql` with each parameter whose type the client declared wrapped in a cast
/// to that type. SQL that does not parse, or whose declared types [`sql_type`] does not
/// map, is returned unchanged, and planning reports what is wrong with it.
fn with_declared_casts<'a>(sql: &'a str, types: &[Option<Type>]) -> Cow<'a, str> {
    if !types.iter().flatten().any(|t| sql_type(t).is_some()) {
        return Cow::Borrowed(sql);
    }
    let Ok(mut statements) = SqlParser::parse_sql(&PostgreSqlDialect {}, sql) else {
        return Cow::Borrowed(sql);
    };
    let mut changed = false;
    let _ = visit_expressions_mut(&mut statements, |expr| {
        if let Some(cast) = declared_cast(expr, types) {
            *expr = cast;
            changed = true;
        }
        ControlFlow::<()>::Continue(())
    });
    if !changed {
        return Cow::Borrowed(sql);
    }
    let rewritten: Vec<String> = statements.iter().map(ToString::to_string).collect();
    Cow::Owned(rewritten.join("; "))
}

/// Returns `CAST($n AS <declared type>)` when `expr` is parameter `$n` with a declared
/// type.
fn declared_cast(expr: &Expr, types: &[Option<Type>]) -> Option<Expr> {
    let Expr::Value(value) = expr else {
        return None;
    };
    let Value::Placeholder(name) = &value.value else {
        return None;
    };
    let index: usize = name.strip_prefix('$')?.parse().ok()?;
    let declared = types.get(index.checked_sub(1)?)?.as_ref()?;
    Some(Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(expr.clone()),
        data_type: sql_type(declared)?,
        array: false,
        format: None,
    })
}

/// Returns the SQL type of a PostgreSQL type that parameters commonly declare, or `None`
/// for the others, which keep the type datafusion-postgres infers.
fn sql_type(declared: &Type) -> Option<DataType> {
    Some(match *declared {
        Type::INT2 => DataType::SmallInt(None),
        Type::INT4 => DataType::Int(None),
        Type::INT8 => DataType::BigInt(None),
        Type::FLOAT4 => DataType::Real,
        Type::FLOAT8 => DataType::DoublePrecision,
        Type::NUMERIC => DataType::Numeric(ExactNumberInfo::None),
        Type::BOOL => DataType::Boolean,
        Type::TEXT | Type::VARCHAR => DataType::Text,
        Type::DATE => DataType::Date,
        Type::TIMESTAMP => DataType::Timestamp(None, TimezoneInfo::None),
        Type::TIMESTAMPTZ => DataType::Timestamp(None, TimezoneInfo::WithTimeZone),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declared_parameters_cast() {
        let sql = with_declared_casts(
            "SELECT 3 * $1, x FROM t WHERE y < $2 AND z = $3",
            &[Some(Type::NUMERIC), Some(Type::FLOAT8), None],
        );

        assert_eq!(
            sql,
            "SELECT 3 * CAST($1 AS NUMERIC), x FROM t WHERE y < CAST($2 AS DOUBLE PRECISION) \
             AND z = $3"
        );
    }

    #[test]
    fn undeclared_or_unknown_types_unchanged() {
        let sql = "SELECT $1 + 1";

        assert!(matches!(
            with_declared_casts(sql, &[None]),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            with_declared_casts(sql, &[Some(Type::JSON)]),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            with_declared_casts("SELEC $1", &[Some(Type::INT4)]),
            Cow::Borrowed(_)
        ));
    }
}
