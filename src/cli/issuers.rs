//! `keyturn issuer …`: workload identity federation from the host.

use super::IssuerCommand;
use crate::error::Result;
use crate::service::federation::{IssuerView, NewIssuer};
use crate::service::{Actor, Keyturn};

pub(super) async fn run(service: &Keyturn, command: IssuerCommand) -> Result<()> {
    let (federation, actor) = (service.federation(), Actor::cli());
    match command {
        IssuerCommand::Trust { issuer, audience, jwks_uri } => {
            let view = federation.trust_issuer(&NewIssuer { issuer, jwks_uri, audience }, &actor).await?;
            eprintln!("trusting {}; map its subjects to clients with `keyturn issuer map`", view.issuer);
            print(&view);
        }
        IssuerCommand::Map { issuer, subject, client_id } => {
            print(&federation.map_subject(&issuer, &subject, &client_id, &actor).await?);
        }
        IssuerCommand::Unmap { issuer, subject } => {
            federation.unmap_subject(&issuer, &subject, &actor).await?;
            println!("{subject} of {issuer} no longer acts as a client");
        }
        IssuerCommand::List => federation.list_issuers().await?.iter().for_each(print),
        IssuerCommand::Forget { issuer } => {
            federation.forget_issuer(&issuer, &actor).await?;
            println!("no longer trusting {issuer}");
        }
    }
    Ok(())
}

fn print(view: &IssuerView) {
    println!("{}\taudience={}\tjwks_uri={}", view.issuer, view.audience, view.jwks_uri);
    for s in &view.subjects {
        println!("\tsubject={}\tclient={}", s.subject, s.client_id);
    }
}
