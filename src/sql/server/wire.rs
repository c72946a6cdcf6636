//! Result columns in types that the PostgreSQL encoder sends correctly.
//!
//! datafusion-postgres encodes rows with arrow-pg, which rejects some Arrow types (half
//! floats, maps, lists of lists) and sends two wrongly. In binary format an `Int8`
//! column goes out as `int2` with a single byte, which clients read as another number.
//! In text format a struct goes out as a record whose NULL fields read as empty strings
//! and whose quotes and parentheses are not escaped the way PostgreSQL does, so clients
//! split it into the wrong fields.
//! [`wire_safe`] puts a projection on top of a query's plan that casts such columns to
//! the nearest type sent correctly (`Int8` to `Int16`, `Float16` to `Float32`) and
//! renders the others as text, the way Arrow prints them (`{a: 1}`, `[[1, 2], [3]]`).
//! Columns of other types, and their names, are unchanged.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::common::{Column, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, LogicalPlanBuilder, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility, cast,
};

/// Treatment of one result column before it is encoded.
#[derive(Debug, Clone, PartialEq)]
enum Conversion {
    Keep,
    Cast(DataType),
    Text,
}

/// Returns `plan` with a projection on top when a result column's type needs a
/// conversion, and `plan` itself otherwise.
pub fn wire_safe(plan: LogicalPlan) -> Result<LogicalPlan> {
    let conversions: Vec<Conversion> = plan
        .schema()
        .fields()
        .iter()
        .map(|field| conversion(field.data_type()))
        .collect();
    if conversions.iter().all(|c| *c == Conversion::Keep) {
        return Ok(plan);
    }

    let columns: Vec<Expr> = plan
        .schema()
        .iter()
        .zip(conversions)
        .map(|((qualifier, field), conversion)| {
            let column = Expr::Column(Column::new(qualifier.cloned(), field.name()));
            let converted = match conversion {
                Conversion::Keep => return column,
                Conversion::Cast(data_type) => cast(column, data_type),
                Conversion::Text => {
                    Expr::ScalarFunction(ScalarFunction::new_udf(Arc::clone(&TEXT), vec![column]))
                }
            };
            converted.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    LogicalPlanBuilder::from(plan).project(columns)?.build()
}

fn conversion(data_type: &DataType) -> Conversion {
    match data_type {
        DataType::Int8 => Conversion::Cast(DataType::Int16),
        DataType::Float16 => Conversion::Cast(DataType::Float32),
        DataType::FixedSizeBinary(_) => Conversion::Cast(DataType::Binary),
        DataType::List(element)
        | DataType::LargeList(element)
        | DataType::FixedSizeList(element, _) => list_conversion(element),
        DataType::Dictionary(_, values) if is_plain(values) => Conversion::Keep,
        data_type if is_plain(data_type) => Conversion::Keep,
        _ => Conversion::Text,
    }
}

/// Returns the conversion of a list column. A list of plain values is sent as a
/// PostgreSQL array. Lists of `Int8` or `Float16` are cast element by element first, and
/// other lists (of lists, structs, maps, ...) become text.
fn list_conversion(element: &Field) -> Conversion {
    let cast_to = match element.data_type() {
        DataType::Int8 => DataType::Int16,
        DataType::Float16 => DataType::Float32,
        data_type if is_plain(data_type) => return Conversion::Keep,
        _ => return Conversion::Text,
    };
    let element = Field::new(element.name(), cast_to, element.is_nullable());
    Conversion::Cast(DataType::List(Arc::new(element)))
}

/// Scalar types that arrow-pg sends correctly, in text and binary format alike.
fn is_plain(data_type: &DataType) -> bool {
    use DataType::*;
    matches!(
        data_type,
        Null | Boolean
            | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | UInt64
            | Float32
            | Float64
            | Decimal128(_, _)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Duration(_)
            | Interval(_)
    )
}

/// The function that renders any value as Arrow prints it, nulls staying null.
static TEXT: LazyLock<Arc<ScalarUDF>> =
    LazyLock::new(|| Arc::new(ScalarUDF::new_from_impl(AsText::default())));

#[derive(Debug, PartialEq, Eq, Hash)]
struct AsText {
    signature: Signature,
}

impl Default for AsText {
    fn default() -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for AsText {
    fn name(&self) -> &str {
        "paperclip_as_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let array = args.args[0].to_array(args.number_rows)?;
        Ok(ColumnarValue::Array(render(&array)?))
    }
}

fn render(array: &ArrayRef) -> Result<ArrayRef> {
    let formatter = ArrayFormatter::try_new(array.as_ref(), &FormatOptions::default())?;
    let mut text = StringBuilder::with_capacity(array.len(), array.len() * 16);
    for row in 0..array.len() {
        if array.is_null(row) {
            text.append_null();
        } else {
            text.append_value(formatter.value(row).to_string());
        }
    }
    Ok(Arc::new(text.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn converted(sql: &str) -> (Vec<DataType>, String) {
        let ctx = crate::sql::new_session();
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();
        let plan = wire_safe(plan).unwrap();
        let types = plan
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let batches = ctx.execute_logical_plan(plan).await.unwrap();
        let batches = batches.collect().await.unwrap();
        let table = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        (types, table)
    }

    #[tokio::test]
    async fn small_types_cast_up() {
        let (types, table) = converted(
            "SELECT arrow_cast(-5, 'Int8') AS i, arrow_cast(1.5, 'Float16') AS h, \
             arrow_cast(make_array(1, 2), 'List(Int8)') AS l",
        )
        .await;

        assert_eq!(types[0], DataType::Int16);
        assert_eq!(types[1], DataType::Float32);
        assert!(matches!(&types[2], DataType::List(f) if *f.data_type() == DataType::Int16));
        assert!(table.contains("| -5 | 1.5 | [1, 2] |"), "{table}");
    }

    #[tokio::test]
    async fn nested_values_become_text() {
        let (types, table) = converted(
            "SELECT make_array(make_array(1, 2), make_array(3)) AS nested, \
             map(['a'], [1]) AS m, make_array(named_struct('a', make_array(1))) AS s, \
             CAST(NULL AS INT) IS NULL AS flag, named_struct('a', NULL, 'b', 'x,y \"z\"') AS r",
        )
        .await;

        assert_eq!(types[0], DataType::Utf8);
        assert_eq!(types[1], DataType::Utf8);
        assert_eq!(types[2], DataType::Utf8);
        assert_eq!(types[3], DataType::Boolean);
        assert_eq!(types[4], DataType::Utf8);
        assert!(table.contains("[[1, 2], [3]]"), "{table}");
        assert!(table.contains("{a: 1}"), "{table}");
        assert!(table.contains("[{a: [1]}]"), "{table}");
        assert!(table.contains(r#"{a: , b: x,y "z"}"#), "{table}");
    }

    #[tokio::test]
    async fn plain_plans_are_unchanged() {
        let ctx = crate::sql::new_session();
        let sql = "SELECT 1 AS a, 'x' AS b, make_array(1.5, 2.5) AS c, X'00' AS d";
        let plan = ctx.state().create_logical_plan(sql).await.unwrap();

        let safe = wire_safe(plan.clone()).unwrap();

        assert_eq!(safe, plan);
    }

    #[tokio::test]
    async fn same_names_keep_qualifiers() {
        let (types, _) = converted(
            "SELECT a.v, b.v FROM (SELECT arrow_cast(1, 'Int8') AS v) a \
             CROSS JOIN (SELECT arrow_cast(2, 'Int8') AS v) b",
        )
        .await;

        assert_eq!(types, vec![DataType::Int16, DataType::Int16]);
    }

    #[test]
    fn null_values_stay_null() {
        let array: ArrayRef = Arc::new(datafusion::arrow::array::Int64Array::from(vec![
            Some(1),
            None,
        ]));

        let text = render(&array).unwrap();

        assert_eq!(text.null_count(), 1);
        assert!(text.is_valid(0));
    }
}
