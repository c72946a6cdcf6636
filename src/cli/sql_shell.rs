//! `paperclip sql` without a query: statements from standard input, on the same catalog
//! as the one-shot command.
//!
//! On a terminal it is an interactive shell: a statement ends with `;` and may span lines,
//! `\q` or Ctrl-D leaves, Ctrl-C drops the statement being typed, and the history is kept
//! in `<data dir>/.sql_history`. Otherwise standard input is a script: every statement
//! runs in order, and the first failure stops it with exit status 1.

use std::io::{IsTerminal, Read};

use anyhow::{Context, Result};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;

use super::GlobalArgs;
use super::commands::run_query;

/// Reads statements from standard input; see the module docs.
pub async fn run(global: &GlobalArgs, storage: Option<&str>) -> Result<()> {
    let (ctx, datasets) = super::commands::sql_session(global, storage).await?;
    if std::io::stdin().is_terminal() {
        shell(global, &ctx, &datasets).await
    } else {
        script(global, &ctx, &datasets).await
    }
}

async fn script(
    global: &GlobalArgs,
    ctx: &datafusion::prelude::SessionContext,
    datasets: &[String],
) -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("cannot read SQL from standard input")?;
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, &text)
        .context("cannot parse the SQL on standard input")?;
    if statements.is_empty() {
        anyhow::bail!("no SQL statement on standard input; give a query or pipe a script");
    }
    for (number, statement) in statements.iter().enumerate() {
        run_query(global, ctx, datasets, &statement.to_string())
            .await
            .with_context(|| format!("statement {} of the script", number + 1))?;
    }
    Ok(())
}

async fn shell(
    global: &GlobalArgs,
    ctx: &datafusion::prelude::SessionContext,
    datasets: &[String],
) -> Result<()> {
    let history = global.data_dir.join(".sql_history");
    let mut editor = DefaultEditor::new().context("cannot start the interactive shell")?;
    // A missing history file is the first session; nothing to load.
    let _ = editor.load_history(&history);
    eprintln!("paperclip SQL shell: end a statement with ';', leave with \\q or Ctrl-D");

    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "paperclip> "
        } else {
            "        -> "
        };
        let line = tokio::task::block_in_place(|| editor.readline(prompt));
        match line {
            Ok(line) if statement.is_empty() && line.trim() == "\\q" => break,
            Ok(line) => {
                statement.push_str(&line);
                statement.push('\n');
                if !line.trim_end().ends_with(';') {
                    continue;
                }
                let _ = editor.add_history_entry(statement.trim());
                let query = statement.trim().trim_end_matches(';').to_string();
                statement.clear();
                if let Err(error) = run_query(global, ctx, datasets, &query).await {
                    eprintln!("error: {error:#}");
                }
            }
            Err(ReadlineError::Interrupted) => statement.clear(),
            Err(ReadlineError::Eof) => break,
            Err(error) => return Err(error).context("cannot read the next line"),
        }
    }
    if let Err(error) = editor.save_history(&history) {
        tracing::warn!(%error, path = %history.display(), "cannot save the SQL history");
    }
    Ok(())
}
