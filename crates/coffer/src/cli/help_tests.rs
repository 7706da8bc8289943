//! Every command, subcommand and argument of `coffer` says what it is for:
//! `coffer <cmd> --help` is a newcomer's first manual.

use super::Cli;
use clap::CommandFactory;

/// The commands and arguments of `command` (and below) that have no help
/// text, by their path (`coffer agent create --url`).
fn missing_help(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
    for arg in command.get_arguments() {
        // clap's own --help and --version carry their text.
        let id = arg.get_id().as_str();
        if id == "help" || id == "version" {
            continue;
        }
        let said = arg.get_help().or(arg.get_long_help()).is_some_and(|h| !h.to_string().trim().is_empty());
        if !said {
            let name = arg.get_long().map(|l| format!("--{l}")).unwrap_or_else(|| format!("<{id}>"));
            missing.push(format!("{path} {name}"));
        }
    }
    for sub in command.get_subcommands() {
        let sub_path = format!("{path} {}", sub.get_name());
        if sub.get_name() == "help" {
            continue;
        }
        let said = sub.get_about().or(sub.get_long_about()).is_some_and(|h| !h.to_string().trim().is_empty());
        if !said {
            missing.push(sub_path.clone());
        }
        missing_help(sub, &sub_path, missing);
    }
}

#[test]
fn every_command_and_argument_has_help() {
    let command = Cli::command();
    let mut missing = Vec::new();
    missing_help(&command, "coffer", &mut missing);
    assert!(missing.is_empty(), "without help text:\n{}", missing.join("\n"));
}

#[test]
fn the_walk_finds_a_command_without_help() {
    // The check itself can fail: a command and an argument without text.
    let bare =
        clap::Command::new("bare").subcommand(clap::Command::new("quiet").arg(clap::Arg::new("thing").long("thing")));
    let mut missing = Vec::new();
    missing_help(&bare, "bare", &mut missing);
    assert_eq!(missing, ["bare quiet", "bare quiet --thing"]);
}

#[test]
fn the_command_tree_is_consistent() {
    // clap's own checks (conflicting names, bad defaults) run in debug.
    Cli::command().debug_assert();
}
