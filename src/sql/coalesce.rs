//! `COALESCE` in which a string argument wins over numeric ones.
//!
//! DataFusion resolves `COALESCE(1, '')` to `Int64` and then fails to cast `''`, and a
//! `BIGINT` column coalesced with a `VARCHAR` column fails on the first string that is
//! not a number. Curators writing caption models expect the string type to win, so this
//! function replaces the built-in one in every paperclip session. It differs only in
//! argument coercion: when the arguments mix numbers and strings, every argument is cast
//! to the common string type. Every other combination (numbers only, strings only) is
//! resolved exactly as DataFusion does.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, FieldRef};
use datafusion::common::Result;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::type_coercion::binary::type_union_resolution;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, Expr, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature,
};

/// The built-in `coalesce` with string-wins coercion; see the module docs.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StringWinsCoalesce {
    builtin: Arc<ScalarUDF>,
}

impl StringWinsCoalesce {
    /// Wraps DataFusion's own `coalesce`, which does everything but the coercion.
    pub fn new() -> Self {
        Self {
            builtin: datafusion::functions::core::coalesce(),
        }
    }

    /// The function to register on a session, replacing the built-in `coalesce`.
    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(Self::new())
    }
}

impl Default for StringWinsCoalesce {
    fn default() -> Self {
        Self::new()
    }
}

/// Returns the argument types after coercion: all strings when numbers and strings mix,
/// `None` when DataFusion's own rule applies.
fn string_wins(arg_types: &[DataType]) -> Result<Option<Vec<DataType>>> {
    let strings: Vec<DataType> = arg_types.iter().filter(|t| is_string(t)).cloned().collect();
    let has_number = arg_types.iter().any(DataType::is_numeric);
    if strings.is_empty() || !has_number {
        return Ok(None);
    }

    let common = type_union_resolution(&strings).unwrap_or(DataType::Utf8);
    Ok(Some(vec![common; arg_types.len()]))
}

fn is_string(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

impl ScalarUDFImpl for StringWinsCoalesce {
    fn name(&self) -> &str {
        self.builtin.name()
    }

    fn signature(&self) -> &Signature {
        self.builtin.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.builtin.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.builtin.return_field_from_args(args)
    }

    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        self.builtin.simplify(args, info)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.builtin.invoke_with_args(args)
    }

    fn conditional_arguments<'a>(
        &self,
        args: &'a [Expr],
    ) -> Option<(Vec<&'a Expr>, Vec<&'a Expr>)> {
        self.builtin.conditional_arguments(args)
    }

    fn short_circuits(&self) -> bool {
        self.builtin.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        match string_wins(arg_types)? {
            Some(types) => Ok(types),
            None => self.builtin.coerce_types(arg_types),
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.builtin.documentation()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_strings_become_strings() {
        let types = string_wins(&[DataType::Int64, DataType::Utf8]).unwrap();
        assert_eq!(types, Some(vec![DataType::Utf8, DataType::Utf8]));

        let types = string_wins(&[DataType::Float64, DataType::Null, DataType::Utf8View]).unwrap();
        assert_eq!(types, Some(vec![DataType::Utf8View; 3]));
    }

    #[test]
    fn other_mixes_keep_the_builtin_rule() {
        assert_eq!(
            string_wins(&[DataType::Int64, DataType::Int32]).unwrap(),
            None
        );
        assert_eq!(
            string_wins(&[DataType::Utf8, DataType::Utf8View]).unwrap(),
            None
        );
        assert_eq!(
            string_wins(&[DataType::Date32, DataType::Utf8]).unwrap(),
            None
        );
    }
}
