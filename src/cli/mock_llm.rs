//! `gambiarra mock-llm`: a fake OpenAI-compatible LLM, to try a hub without a GPU.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::tools::mock::{MockConfig, MockLlm};

/// Run a fake OpenAI-compatible LLM (chat, completions, embeddings, /v1/models, Ollama's
/// /api/tags and /api/ps).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "mock-llm",
    example = "A fake llama3 on Ollama's port, 50 tokens 20 ms apart:\n  $ gambiarra mock-llm\nA fake Ollama with three models, one loaded:\n  $ gambiarra mock-llm --model llama3:latest --model phi3:latest --model qwen2.5:7b --loaded llama3:latest\nAs fast as possible, for benchmarks:\n  $ gambiarra mock-llm --port 8081 --token-delay-ms 0 --tokens 200"
)]
pub struct MockLlmArgs {
    /// port to listen on (default 11434, Ollama's)
    #[argh(option, short = 'p', default = "11434")]
    pub(crate) port: u16,
    /// address to listen on (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub(crate) host: String,
    /// a model to list (default llama3); repeat for several
    #[argh(option)]
    pub(crate) model: Vec<String>,
    /// a model /api/ps lists as loaded (default: the first model); repeatable
    #[argh(option)]
    pub(crate) loaded: Vec<String>,
    /// tokens per completion (default 50)
    #[argh(option, default = "50")]
    pub(crate) tokens: u32,
    /// milliseconds between streamed tokens (default 20)
    #[argh(option, default = "20")]
    pub(crate) token_delay_ms: u64,
    /// how the JSON looks, after real servers: compact (default), spaced (Python's
    /// json.dumps, like llama-cpp-python), reasoning (reasoning_content deltas), tool-calls
    /// (a streamed tool call), usage-chunk (a usage chunk in every stream)
    #[argh(option, default = "crate::tools::mock::Style::Compact")]
    pub(crate) style: crate::tools::mock::Style,
    /// parallel slots to report on /props, as llama.cpp's server does (default: no /props)
    #[argh(option)]
    pub(crate) slots: Option<u32>,
    /// model prompt processing: microseconds per byte of prompt not in the KV cache before
    /// the first token (default 0: none)
    #[argh(option, default = "0.0")]
    pub(crate) prefill_us_per_byte: f64,
    /// prompts the modelled KV cache holds, most recent first (default 4)
    #[argh(option, default = "4")]
    pub(crate) kv_cache: usize,
}

pub(crate) fn run(args: MockLlmArgs) -> ExitCode {
    super::init_logging(tracing::Level::WARN);
    let addr: SocketAddr = match format!("{}:{}", args.host, args.port).parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("gambiarra mock-llm: bad --host/--port: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match super::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let mut models = args.model.clone();
        if models.is_empty() {
            models.push("llama3".into());
        }
        let loaded = if args.loaded.is_empty() {
            vec![models[0].clone()]
        } else {
            args.loaded.clone()
        };
        let config = MockConfig {
            model: models[0].clone(),
            more_models: models[1..].to_vec(),
            loaded,
            tokens: args.tokens,
            token_delay: Duration::from_millis(args.token_delay_ms),
            style: args.style,
            slots: args.slots,
            prefill_us_per_byte: args.prefill_us_per_byte.clamp(0.0, 1e6),
            kv_cache: args.kv_cache.clamp(1, 1 << 16),
        };
        let mock = match MockLlm::start(addr, config, false).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("gambiarra mock-llm: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "Mock LLM serving {} on {} ({} tokens, {} ms apart)",
            models.join(", "),
            mock.url(),
            args.tokens,
            args.token_delay_ms
        );
        super::wait_for_signal().await;
        if args.prefill_us_per_byte > 0.0 {
            let (seen, processed) = mock.prefill();
            println!(
                "Prompt bytes: {seen}, processed {processed}, from the KV cache {}",
                seen - processed
            );
        }
        mock.shutdown().await;
        ExitCode::SUCCESS
    })
}
