//! Chunked prefill for the priority policies (`chunked_prefill = true`, `chunk_size`): the token
//! budget they share between decodes and prefill chunks, checked and recorded the same way by each.

use crate::vocab::request::Request;

/// The optional chunked prefill of a priority policy (`chunked_prefill = true`, `chunk_size`):
/// prefill chunks and decodes share one token budget per iteration, as in vLLM with chunked
/// prefill. Checked here so every policy that offers it says the same.
pub fn chunk_budget(
    policy: &str,
    chunked_prefill: bool,
    chunk_size: Option<u32>,
    limits: super::Limits,
) -> crate::error::Result<Option<u32>> {
    let err = |m: String| {
        Err(crate::error::SimError::config(format!(
            "[policies.{policy}] {m}"
        )))
    };
    if !chunked_prefill {
        return match chunk_size {
            Some(_) => err("chunk_size needs chunked_prefill = true".into()),
            None => Ok(None),
        };
    }
    let budget = chunk_size.unwrap_or(limits.max_batch_tokens);
    if budget < 2 || budget > limits.max_batch_tokens {
        return err(format!(
            "chunk_size must be in 2..={} (the scenario's max_batch_tokens), got {budget}",
            limits.max_batch_tokens
        ));
    }
    Ok(Some(budget))
}

/// Record the resolved token budget in a policy's `config.json` parameters (nothing without
/// chunking, so unchunked runs write what they always wrote).
pub fn record_chunking(json: &mut serde_json::Value, chunk_budget: Option<u32>) {
    if let (Some(budget), Some(map)) = (chunk_budget, json.as_object_mut()) {
        map.insert("chunked_prefill".into(), true.into());
        map.insert("chunk_size".into(), budget.into());
    }
}

/// The step `r` takes within `tokens_left` tokens of a chunked iteration's budget: the
/// [`super::RunItem::prefill_chunk_tokens`] to plan (0 for a decode) and the tokens it uses, or
/// `None` when nothing of it fits.
#[inline]
pub fn chunk_step(r: &Request, tokens_left: u32) -> Option<(u32, u32)> {
    if r.in_prefill() {
        let c = r.prefill_left().min(tokens_left);
        (c > 0).then_some((c, c))
    } else {
        (tokens_left > 0).then_some((0, 1))
    }
}
