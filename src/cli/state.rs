//! `state`: print the OCI state document.

use super::{Ctx, Result};

pub type Args = super::IdArgs;

pub fn run(ctx: &Ctx, args: Args) -> Result<i32> {
    crate::ids::validate(&args.id)?;
    let st = ctx.store().peek(&args.id)?;
    let out = serde_json::to_string_pretty(&st.oci()).unwrap_or_default();
    println!("{out}");
    Ok(0)
}
