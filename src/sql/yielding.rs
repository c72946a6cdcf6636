//! A physical optimizer rule that makes joins give their thread back.
//!
//! A join can compute for a long time between two batches it returns. A nested-loop join
//! compares every probe batch with the whole build side. A cross join, or a join on a
//! key with few values, makes millions of batches from one input batch. DataFusion makes
//! leaves and exchanges spend tokio's cooperative budget, which lets a task run 128
//! batches before it yields. A task computing an aggregate over such a join can then run
//! for minutes without yielding, and a query stopped by a timeout or a cancel request
//! keeps its thread until the result is ready.
//!
//! [`YieldingJoins`] puts a [`YieldEachBatch`] above every join and unnest and above
//! each of their inputs, so the task yields before each batch passes and an abort takes
//! effect there. Rows and their order are unchanged. A yield costs one wake-up of the
//! task, small next to the work of a batch.
//!
//! NOTE: a nested-loop join compares each probe batch with every row of its build side
//! inside one poll, so a stopped query with a large build side keeps its thread for one
//! such pass (seconds for 10^5 build rows in a debug build, measured).

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::{Stream, StreamExt};

/// Puts a [`YieldEachBatch`] above each operator that can compute long between batches,
/// and above its inputs.
#[derive(Debug, Default)]
pub struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !multiplies_work(node.as_ref()) {
                return Ok(Transformed::no(node));
            }
            let inputs = node
                .children()
                .into_iter()
                .map(|child| YieldEachBatch::wrap(Arc::clone(child)))
                .collect();
            let node = Arc::clone(&node).replace_children(
                inputs,
                ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
            )?;
            Ok(Transformed::yes(YieldEachBatch::wrap(node)))
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

fn multiplies_work(plan: &dyn ExecutionPlan) -> bool {
    let name = plan.name();
    !plan.children().is_empty() && (name.ends_with("JoinExec") || name == "UnnestExec")
}

/// Passes its input's batches on unchanged, yielding to the runtime before each one.
#[derive(Debug)]
pub struct YieldEachBatch {
    input: Arc<dyn ExecutionPlan>,
}

impl YieldEachBatch {
    fn wrap(input: Arc<dyn ExecutionPlan>) -> Arc<dyn ExecutionPlan> {
        Arc::new(Self { input })
    }
}

impl DisplayAs for YieldEachBatch {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "YieldEachBatch")
    }
}

impl ExecutionPlan for YieldEachBatch {
    fn name(&self) -> &str {
        "YieldEachBatch"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Self::wrap(children.swap_remove(0)))
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        Ok(Box::pin(YieldingStream {
            input,
            yielded: false,
        }))
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }
}

/// The stream of [`YieldEachBatch`]: returns `Pending` once, with a wake-up, before
/// each batch it passes on.
struct YieldingStream {
    input: SendableRecordBatchStream,
    yielded: bool,
}

impl Stream for YieldingStream {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let polled = self.input.poll_next_unpin(cx);
        // While the input has no batch yet, the next poll goes straight to it.
        self.yielded = polled.is_pending();
        polled
    }
}

impl RecordBatchStream for YieldingStream {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
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
        assert!(above.contains("YieldEachBatch"), "{plan_text}");
        let below = plan_text.lines().nth(join_line + 1).unwrap();
        assert!(below.contains("YieldEachBatch"), "{plan_text}");

        let batches = df.collect().await.unwrap();
        let result_text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        assert!(result_text.contains("| 30000 |"), "{result_text}");
    }

    #[tokio::test]
    async fn nested_loop_join_rows_kept() {
        let ctx = crate::sql::new_session();
        let sql = "SELECT count(*) AS n FROM range(2000) a, range(2000) b \
                   WHERE a.value + b.value = 1999";

        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();

        let shown = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        // One b for each a.
        assert!(shown.contains("| 2000 |"), "{shown}");
    }
}
