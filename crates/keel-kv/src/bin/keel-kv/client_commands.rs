//! The client subcommands: `put`, `get`, `delete`, `cas`, `status`,
//! `members` and `transfer-leader`, over the HTTP API.

use std::time::Duration;

use bytes::Bytes;
use hyper::Method;
use keel_kv::api::ClusterView;
use keel_kv::client::{encode_key, HttpResponse, KvClient};
use serde_json::json;

use crate::{consistency_name, Commands, Failure, MembersCommand, Target};

fn client_for(target: &Target) -> KvClient {
    KvClient::new(&target.endpoints, Duration::from_millis(target.timeout_ms))
}

/// Turns an error answer into a failure with exit code 3.
fn server_error(response: &HttpResponse) -> Failure {
    match response.json() {
        Some(body) if body.get("error").is_some() => {
            let leader = body["leader"]
                .as_u64()
                .map_or_else(String::new, |leader| format!(" (leader: node {leader})"));
            Failure::new(
                3,
                format!(
                    "error: {}: {}{leader}",
                    body["error"].as_str().unwrap_or("?"),
                    body["message"].as_str().unwrap_or("")
                ),
            )
        }
        _ => Failure::new(3, format!("error: HTTP {}: {}", response.status, response.text())),
    }
}

pub(crate) async fn client_command(command: Commands) -> Result<(), Failure> {
    match command {
        Commands::Put { key, value, target } => {
            let value = if value == "-" {
                let mut buffer = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buffer)
                    .map_err(|error| Failure::new(2, format!("error: reading standard input: {error}")))?;
                Bytes::from(buffer)
            } else {
                Bytes::from(value)
            };
            let response = client_for(&target)
                .request(Method::PUT, &format!("/v1/kv/{}", encode_key(&key)), value)
                .await?;
            match response.status {
                200 => {
                    let index = response
                        .json()
                        .and_then(|body| body["index"].as_u64())
                        .unwrap_or(0);
                    println!("OK (index {index})");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Get {
            key,
            consistency,
            target,
        } => {
            let path = format!(
                "/v1/kv/{}?consistency={}",
                encode_key(&key),
                consistency_name(consistency)
            );
            let response = client_for(&target)
                .request(Method::GET, &path, Bytes::new())
                .await?;
            match response.status {
                200 => {
                    use std::io::Write;
                    let mut stdout = std::io::stdout();
                    let _ = stdout.write_all(&response.body);
                    if !response.body.ends_with(b"\n") {
                        let _ = stdout.write_all(b"\n");
                    }
                    Ok(())
                }
                404 if response.error_code().as_deref() == Some("not_found") => {
                    Err(Failure::new(1, format!("not found: {key}")))
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Delete { key, target } => {
            let path = format!("/v1/kv/{}", encode_key(&key));
            let response = client_for(&target)
                .request(Method::DELETE, &path, Bytes::new())
                .await?;
            match (response.status, response.json()) {
                (200, Some(body)) => {
                    let index = body["index"].as_u64().unwrap_or(0);
                    if body["deleted"] == true {
                        println!("deleted (index {index})");
                    } else {
                        println!("not present (index {index})");
                    }
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Cas {
            key,
            expected,
            value,
            delete,
            target,
        } => {
            let value = if delete { None } else { value };
            let body = json!({ "expected": expected, "value": value }).to_string();
            let path = format!("/v1/kv/{}/cas", encode_key(&key));
            let response = client_for(&target)
                .request(Method::POST, &path, Bytes::from(body))
                .await?;
            match (response.status, response.json()) {
                (200, Some(body)) => {
                    println!("OK (index {})", body["index"].as_u64().unwrap_or(0));
                    Ok(())
                }
                (409, Some(body)) if body.get("ok").is_some() => {
                    let current = match body["current"].as_str() {
                        Some(current) => format!("{current:?}"),
                        None => "absent".to_string(),
                    };
                    Err(Failure::new(
                        1,
                        format!("no match: the current value is {current}"),
                    ))
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Status { target } => status(&target).await,
        Commands::Members { command } => members(command).await,
        Commands::TransferLeader { id, target } => {
            let body = json!({ "id": id }).to_string();
            let response = client_for(&target)
                .request(Method::POST, "/v1/cluster/leader", Bytes::from(body))
                .await?;
            match response.status {
                200 => {
                    println!("node {id} now leads");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        Commands::Serve(_) | Commands::Cluster(_) | Commands::Bench(_) => Ok(()),
    }
}

async fn members(command: MembersCommand) -> Result<(), Failure> {
    match command {
        MembersCommand::Add {
            id,
            peer_addr,
            client_addr,
            learner,
            target,
        } => {
            let role = if learner { "learner" } else { "voter" };
            let body = json!({ "id": id, "peer_addr": peer_addr, "client_addr": client_addr, "role": role });
            let response = client_for(&target)
                .request(Method::POST, "/v1/cluster/members", Bytes::from(body.to_string()))
                .await?;
            match response.status {
                200 => {
                    println!("node {id} added as a {role}");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
        MembersCommand::Remove { id, target } => {
            let response = client_for(&target)
                .request(Method::DELETE, &format!("/v1/cluster/members/{id}"), Bytes::new())
                .await?;
            match response.status {
                200 => {
                    println!("node {id} removed");
                    Ok(())
                }
                _ => Err(server_error(&response)),
            }
        }
    }
}

/// Prints one line per member, asking each member for its own view.
async fn status(target: &Target) -> Result<(), Failure> {
    let client = client_for(target);
    let response = client.request(Method::GET, "/v1/cluster", Bytes::new()).await?;
    if response.status != 200 {
        return Err(server_error(&response));
    }
    let view: ClusterView = serde_json::from_slice(&response.body)
        .map_err(|error| Failure::new(3, format!("error: unreadable cluster view: {error}")))?;
    let leader = view
        .leader
        .map_or_else(|| "none known".to_string(), |leader| format!("node {leader}"));
    println!(
        "cluster id: {}   leader: {leader}   term: {}   commit index: {}",
        view.cluster_id.as_deref().unwrap_or("?"),
        view.term,
        view.commit_index
    );
    println!(
        "{:<4} {:<8} {:<14} {:<22} {:<22} {:>8} {:>8}",
        "id", "member", "role", "client", "peer", "term", "applied"
    );
    for member in &view.members {
        let client_addr = member.client_addr.clone().unwrap_or_else(|| "?".to_string());
        let own = match &member.client_addr {
            Some(address) => client
                .request_to(address, Method::GET, "/v1/cluster", Bytes::new())
                .await
                .ok()
                .filter(|response| response.status == 200)
                .and_then(|response| serde_json::from_slice::<ClusterView>(&response.body).ok()),
            None => None,
        };
        let (role, term, applied) = match own {
            Some(own) => (own.role, own.term.to_string(), own.applied_index.to_string()),
            None => ("unreachable".to_string(), "-".to_string(), "-".to_string()),
        };
        println!(
            "{:<4} {:<8} {:<14} {:<22} {:<22} {:>8} {:>8}",
            member.id,
            member.role,
            role,
            client_addr,
            member.peer_addr.clone().unwrap_or_else(|| "?".to_string()),
            term,
            applied
        );
    }
    Ok(())
}
