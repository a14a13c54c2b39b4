//! `itoflow`: the command line of the itoflow workspace.
//!
//! * `itoflow sample` / `itoflow likelihood`: draw samples from and score data under a
//!   score-based diffusion model exported to ONNX (the embedded digits demo model by default).
//! * `itoflow inspect`: what an exported model contains.
//! * `itoflow solve`: built-in SDE/ODE problems with any core solver.
//! * `itoflow merge`: joins the outputs of `--shard k/n` runs.
//!
//! Every failure is reported as one line on stderr with a non-zero exit status.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

mod data;
mod inspect;
mod likelihood;
mod limits;
mod model;
mod npy;
mod output;
mod progress;
mod sample;
mod solve;
mod store;

/// Stochastic and ordinary differential equations, and score-based diffusion models.
#[derive(Parser, Debug)]
#[command(name = "itoflow", version, about, long_about = None, propagate_version = true, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Draw samples from a score model (default: the embedded digits demo model).
    Sample(Box<sample::SampleArgs>),
    /// Per-sample log-likelihood and bits/dim of data under a score model.
    Likelihood(likelihood::LikelihoodArgs),
    /// Show a model file's inputs/outputs, metadata, derivative graph and execution providers.
    Inspect(inspect::InspectArgs),
    /// Solve a built-in SDE/ODE problem and summarise the state at the final time.
    Solve(solve::SolveArgs),
    /// Join the outputs of `--shard k/n` runs into one file, checking that they are complete.
    Merge {
        /// The merged output: `.npy`, or `.json` for likelihood runs (whose merged summary
        /// gives the statistics of all the shards' samples).
        out: PathBuf,
        /// The shard outputs (each with its `.meta.json` sidecar).
        shards: Vec<PathBuf>,
    },
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Sample(a) => sample::run(&a),
        Command::Solve(a) => solve::run(&a),
        Command::Likelihood(a) => likelihood::run(&a),
        Command::Inspect(a) => inspect::run(&a),
        Command::Merge { out, shards } => {
            let meta = store::merge(&out, &shards)?;
            println!(
                "merged {} shards: {} items of shape {:?} → {}",
                shards.len(),
                meta.spec.total,
                meta.spec.item_shape,
                out.display()
            );
            if let Some(stats) = likelihood::Statistics::from_summary(&meta.summary) {
                println!("{} samples: {}", stats.samples, stats.line());
            }
            Ok(())
        }
    }
}

/// Parses the command line; negative numbers are values everywhere (so that `--steps -3` is
/// reported as an invalid value, not as an unknown flag).
fn parse() -> Result<Cli, clap::Error> {
    fn negatives(c: clap::Command) -> clap::Command {
        c.allow_negative_numbers(true).mut_subcommands(negatives)
    }
    let mut cmd = negatives(Cli::command());
    let matches = cmd.try_get_matches_from_mut(std::env::args_os())?;
    Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut cmd))
}

fn main() -> ExitCode {
    // A bug must still end in one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error ({msg}{place}); this is a bug in itoflow {}: please report it on the project's issue tracker with the command line that caused it",
            env!("CARGO_PKG_VERSION")
        );
    }));
    let cli = match parse() {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion)
                || e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            {
                let _ = e.print();
                return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    ExitCode::from(2)
                } else {
                    ExitCode::SUCCESS
                };
            }
            // clap's message is several lines (usage, hint); keep the first, with the missing
            // arguments that clap lists on the following lines.
            let text = e.render().to_string();
            let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
            let mut first = lines
                .next()
                .unwrap_or("error: invalid arguments")
                .to_string();
            if e.kind() == clap::error::ErrorKind::MissingRequiredArgument {
                let missing: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
                first = format!("{}: {}", first.trim_end_matches(':'), missing.join(", "));
            }
            eprintln!("{first} (see 'itoflow --help')");
            return ExitCode::from(2);
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(101),
    }
}
