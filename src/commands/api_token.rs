//! `ferroturn api-token add|list|remove`: the bearer tokens of the credentials
//! API ([`crate::api`]), in the credential store. Like the other store
//! commands they need no running server: the API reads the tokens from the
//! store on every request, so an added token works and a removed one stops
//! working at once.
//!
//! `add` prints the token (stdout, once); the store keeps only its SHA-256,
//! so a lost token cannot be shown again, only replaced.

use serde::Serialize;

use super::credentials::{
    block_on, note, open, print_json, print_line, print_table, CredentialsError, Result, Target,
};
use crate::api::tokens;
use crate::cli::{ApiTokenCommand, ApiTokenListArgs, ApiTokenNameArgs};
use crate::time::format_unix;

/// `ferroturn api-token ...`
pub fn run(command: &ApiTokenCommand) -> Result<()> {
    match command {
        ApiTokenCommand::Add(args) => add(args),
        ApiTokenCommand::List(args) => list(args),
        ApiTokenCommand::Remove(args) => remove(args),
    }
}

fn add(args: &ApiTokenNameArgs) -> Result<()> {
    let location = Target::resolve(&args.store)?.require_location()?;
    let token = tokens::generate();
    block_on(async {
        let store = open(location).await?;
        let result = store.add_api_token(&args.name, tokens::hash(&token)).await;
        store.close().await;
        Ok::<_, CredentialsError>(result?)
    })??;
    print_line(&token)?;
    note(format_args!(
        "added API token {:?}; it is shown only now: the store keeps its hash",
        args.name
    ));
    Ok(())
}

fn remove(args: &ApiTokenNameArgs) -> Result<()> {
    let location = Target::resolve(&args.store)?.require_location()?;
    block_on(async {
        let store = open(location).await?;
        let result = store.remove_api_token(&args.name).await;
        store.close().await;
        Ok::<_, CredentialsError>(result?)
    })??;
    note(format_args!("removed API token {:?}", args.name));
    Ok(())
}

/// One row of `api-token list --json`.
#[derive(Serialize)]
struct TokenJson {
    name: String,
    /// Unix seconds.
    created: i64,
    /// Unix seconds, to the minute; null if never used.
    last_used: Option<i64>,
}

fn list(args: &ApiTokenListArgs) -> Result<()> {
    let location = Target::resolve(&args.store)?.require_location()?;
    let rows = block_on(async {
        let store = open(location).await?;
        let rows = store.list_api_tokens().await;
        store.close().await;
        Ok::<_, CredentialsError>(rows?)
    })??;
    if args.json {
        let rows: Vec<TokenJson> = rows
            .into_iter()
            .map(|t| TokenJson {
                name: t.name,
                created: t.created,
                last_used: t.last_used,
            })
            .collect();
        return print_json(&rows);
    }
    if rows.is_empty() {
        note(format_args!("no API tokens"));
        return Ok(());
    }
    let rows: Vec<[String; 3]> = rows
        .iter()
        .map(|t| {
            [
                t.name.clone(),
                format_unix(t.created),
                t.last_used.map_or_else(|| "never".to_owned(), format_unix),
            ]
        })
        .collect();
    print_table(["NAME", "CREATED", "LAST USED"], &rows)
}
