//! `chorus kv`: read and write keys through the native client, from the shell.

use std::net::SocketAddr;

use anyhow::Context;
use chorus_client::{Client, ClientConfig};
use chorus_kv::Op;
use clap::{Args, Subcommand};

/// Arguments of `chorus kv`.
#[derive(Debug, Args)]
pub struct KvArgs {
    /// RESP addresses of the nodes (any node will do; the client fails over).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
    )]
    endpoints: Vec<SocketAddr>,
    #[command(subcommand)]
    operation: Operation,
}

#[derive(Debug, Subcommand)]
enum Operation {
    /// Print a key's value (linearizable read).
    Get { key: String },
    /// Set a key.
    Put { key: String, value: String },
    /// Remove a key.
    Del { key: String },
    /// Append to a key's value.
    Append { key: String, value: String },
    /// Set KEY to TO if it currently equals FROM.
    Cas {
        key: String,
        from: String,
        to: String,
    },
    /// Add N (default 1) to a key holding an integer.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        by: i64,
    },
}

/// Runs `chorus kv`.
///
/// # Errors
/// When the cluster cannot answer; the message says whether the write may have happened.
pub fn run(args: &KvArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime
        .block_on(async {
            let mut client = Client::new(ClientConfig::new(args.endpoints.clone()))?;
            match &args.operation {
                Operation::Get { key } => match client.get(key.clone()).await? {
                    Some(value) => println!("{}", String::from_utf8_lossy(&value)),
                    None => println!("(nil)"),
                },
                Operation::Put { key, value } => {
                    client.put(key.clone(), value.clone()).await?;
                    println!("OK");
                }
                Operation::Del { key } => {
                    println!("{}", u8::from(client.delete(key.clone()).await?))
                }
                Operation::Append { key, value } => {
                    println!("{}", client.append(key.clone(), value.clone()).await?)
                }
                Operation::Cas { key, from, to } => {
                    println!(
                        "{}",
                        client.cas(key.clone(), from.clone(), to.clone()).await?
                    );
                }
                Operation::Incr { key, by } => {
                    let response = client
                        .execute(Op::IncrBy {
                            key: key.clone().into(),
                            delta: *by,
                        })
                        .await?;
                    match response {
                        chorus_kv::Response::Integer(value) => println!("{value}"),
                        other => anyhow::bail!("unexpected answer {other:?}"),
                    }
                }
            }
            Ok::<(), anyhow::Error>(())
        })
        .context("chorus kv")
}
