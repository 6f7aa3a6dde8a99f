//! `gambiarra mock-llm`: a fake OpenAI-compatible LLM, to try a hub without a GPU.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;

use crate::tools::mock::{MockConfig, MockLlm};

/// Run a fake OpenAI-compatible LLM (chat, completions, embeddings, /v1/models, /api/tags).
#[derive(FromArgs, Debug)]
#[argh(
    subcommand,
    name = "mock-llm",
    example = "A fake llama3 on Ollama's port, 50 tokens 20 ms apart:\n  $ gambiarra mock-llm\nAs fast as possible, for benchmarks:\n  $ gambiarra mock-llm --port 8081 --token-delay-ms 0 --tokens 200"
)]
pub struct MockLlmArgs {
    /// port to listen on (default 11434, Ollama's)
    #[argh(option, short = 'p', default = "11434")]
    pub(crate) port: u16,
    /// address to listen on (default 127.0.0.1)
    #[argh(option, default = "String::from(\"127.0.0.1\")")]
    pub(crate) host: String,
    /// model name to serve (default llama3)
    #[argh(option, default = "String::from(\"llama3\")")]
    pub(crate) model: String,
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
        let config = MockConfig {
            model: args.model.clone(),
            tokens: args.tokens,
            token_delay: Duration::from_millis(args.token_delay_ms),
            style: args.style,
        };
        let mock = match MockLlm::start(addr, config, false).await {
            Ok(m) => m,
            Err(e) => {
                eprintln!("gambiarra mock-llm: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "Mock LLM serving model {:?} on {} ({} tokens, {} ms apart)",
            args.model,
            mock.url(),
            args.tokens,
            args.token_delay_ms
        );
        super::wait_for_signal().await;
        mock.shutdown().await;
        ExitCode::SUCCESS
    })
}
