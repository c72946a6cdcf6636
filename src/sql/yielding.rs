//! A physical optimizer rule that makes joins give their thread back.
//!
//! A join can produce millions of batches from one input batch: a cross join, or a join
//! on a key with few values. DataFusion makes leaves and exchanges spend tokio's
//! cooperative budget, but the batches a join makes from one probe batch spend none. A
//! task computing an aggregate over such a join then never yields, and a query stopped
//! by a timeout or a cancel request keeps its thread until the result is ready.
//!
//! [`YieldingJoins`] wraps every join and unnest in a [`CooperativeExec`], which spends
//! budget for each batch it passes on, so the task yields every so many batches and an
//! abort takes effect there. Rows and their order are unchanged.

use std::sync::Arc;

use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::coop::CooperativeExec;

/// Wraps each operator that can produce more batches than it reads in a
/// [`CooperativeExec`].
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if multiplies_rows(node.as_ref()) {
                Ok(Transformed::yes(
                    Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>
                ))
            } else {
                Ok(Transformed::no(node))
            }
        })
        .map(|transformed| transformed.data)
    }

    fn name(&self) -> &str {
        "yielding_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn multiplies_rows(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    !plan.children().is_empty() && (name.ends_with("JoinExec") || name == "UnnestExec")
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn joins_wrapped_rows_unchanged() {
        let ctx = crate::sql::new_session();
        let sql = "SELECT count(*) AS n FROM range(300) a JOIN range(300) b \
                   ON a.value % 3 = b.value % 3";
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let plan_text = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let join_line = plan_text
            .lines()
            .position(|line| line.contains("HashJoinExec"))
            .unwrap_or_else(|| panic!("no hash join in\n{plan_text}"));
        let above = plan_text.lines().nth(join_line - 1).unwrap();
        assert!(above.contains("CooperativeExec"), "{plan_text}");

        let batches = df.collect().await.unwrap();
        let result_text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(result_text.contains("| 30000 |"), "{result_text}");
    }
}
