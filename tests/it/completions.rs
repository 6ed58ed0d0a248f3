//! Shell completions and man pages generated from the CLI definition: each shell's own parser
//! accepts its script (`bash -n`, `zsh -n`, `fish --no-execute`), bash's script really
//! completes subcommands and options, and `man -l` renders every page without warnings.

use crate::common;

use common::*;
use std::process::Command;

fn stdout_of(args: &[&str]) -> String {
    String::from_utf8(run(&mut stagebox(args)).stdout).expect("UTF-8")
}

/// Every (non-hidden) subcommand, read from `stagebox --help`.
fn subcommands() -> Vec<String> {
    let help = stdout_of(&["--help"]);
    let list = help.split_once("Commands:").expect("a Commands: section").1;
    let list = list.split("\n\n").next().unwrap();
    let names: Vec<String> = list.lines().filter_map(|l| l.split_whitespace().next()).filter(|n| *n != "help").map(str::to_string).collect();
    assert!(names.iter().any(|n| n == "build") && names.iter().any(|n| n == "completions"), "{names:?}");
    names
}

#[test]
fn each_shell_accepts_its_completion_script() {
    let d = tempdir();
    for (shell, check) in [("bash", &["-n"][..]), ("zsh", &["-n"][..]), ("fish", &["--no-execute"][..])] {
        require_tool(shell);
        let script = stdout_of(&["completions", shell]);
        assert!(script.contains("stagebox"), "{shell}: {script}");
        let f = d.path().join(format!("stagebox.{shell}"));
        write(&f, &script);
        let o = run(Command::new(shell).args(check).arg(&f));
        assert!(o.stderr.is_empty(), "{shell} complains about its script: {}", String::from_utf8_lossy(&o.stderr));
    }
    let o = output(&mut stagebox(["completions", "no-such-shell"]));
    assert_eq!(o.status.code(), Some(2), "an unknown shell is a usage error");
}

#[test]
fn bash_completion_completes_subcommands_and_options() {
    require_tool("bash");
    let d = tempdir();
    let f = d.path().join("stagebox.bash");
    write(&f, stdout_of(&["completions", "bash"]));
    // What bash's programmable completion would offer after `stagebox ` and `stagebox build --`.
    let complete = |words: &str| -> Vec<String> {
        let script = format!(
            "source {}\nCOMP_WORDS=({words})\nCOMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\nCOMP_LINE=\"{words}\"\nCOMP_POINT=${{#COMP_LINE}}\n_stagebox stagebox \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
            f.display()
        );
        let o = run(Command::new("bash").arg("-c").arg(script));
        String::from_utf8(o.stdout).unwrap().lines().map(str::to_string).collect()
    };
    let top = complete("stagebox ''");
    for s in subcommands() {
        assert!(top.contains(&s), "`stagebox <TAB>` does not offer {s}: {top:?}");
    }
    let build = complete("stagebox build --");
    for opt in ["--out", "--cache", "--offline", "--locked", "--check", "--quiet"] {
        assert!(build.iter().any(|w| w == opt), "`stagebox build --<TAB>` does not offer {opt}: {build:?}");
    }
}

/// `man -l PAGE` with warnings on: the rendered text; fails on any warning.
fn render(page: &std::path::Path) -> String {
    require_tool("man");
    require_tool("groff");
    let o = run(Command::new("man").args(["--warnings", "-l"]).arg(page).env("MANWIDTH", "80").env("MAN_KEEP_FORMATTING", "0").env("LC_ALL", "C.UTF-8"));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.trim().is_empty(), "man warns about {}: {err}", page.display());
    // Drop nroff's overstrikes (`X\bX` bold, `_\bX` underline) that man leaves in a pipe.
    let mut text = String::new();
    for c in String::from_utf8_lossy(&o.stdout).chars() {
        if c == '\u{8}' {
            text.pop();
        } else {
            text.push(c);
        }
    }
    text
}

#[test]
fn man_pages_render_with_every_command_and_option() {
    let d = tempdir();
    let top = d.path().join("stagebox.1");
    write(&top, stdout_of(&["man"]));
    let text = render(&top);
    assert!(text.contains("NAME") && text.contains("SYNOPSIS"), "{text}");
    for s in subcommands() {
        assert!(text.contains(&format!("stagebox-{s}(1)")), "stagebox(1) does not list {s}:\n{text}");
    }

    let dir = d.path().join("man1");
    run(&mut stagebox(["man".as_ref(), "--dir".as_ref(), dir.as_os_str()]));
    for s in subcommands() {
        let page = dir.join(format!("stagebox-{s}.1"));
        assert!(page.is_file(), "no page {}", page.display());
        let text = render(&page);
        assert!(text.contains(&format!("stagebox-{s}")), "{}:\n{text}", page.display());
    }
    let build = render(&dir.join("stagebox-build.1"));
    for opt in ["--out", "--cache", "--locked", "--check", "--quiet"] {
        assert!(build.contains(opt), "stagebox-build(1) does not document {opt}:\n{build}");
    }
    assert!(!build.contains("check-variant"), "hidden options stay out of the page:\n{build}");
    // The same bytes every time (no date in the page).
    let again = d.path().join("again");
    run(&mut stagebox(["man".as_ref(), "--dir".as_ref(), again.as_os_str()]));
    assert_eq!(hash_tree(&dir), hash_tree(&again));
}

#[test]
fn install_script_puts_pages_and_completions_where_shells_look() {
    let d = tempdir();
    let prefix = d.path().join("prefix");
    run(Command::new("bash").arg(manifest_dir().join("scripts/install.sh")).env("PREFIX", &prefix).env("STAGEBOX", stagebox_bin()));
    for f in [
        "bin/stagebox",
        "share/man/man1/stagebox.1",
        "share/man/man1/stagebox-build.1",
        "share/bash-completion/completions/stagebox",
        "share/zsh/site-functions/_stagebox",
        "share/fish/vendor_completions.d/stagebox.fish",
    ] {
        assert!(prefix.join(f).is_file(), "scripts/install.sh did not write {f}");
    }
    // `man` finds the installed pages through MANPATH, by name.
    let o = run(Command::new("man").arg("stagebox-lock").env("MANPATH", prefix.join("share/man")).env("MANWIDTH", "80"));
    assert!(String::from_utf8_lossy(&o.stdout).contains("Pin every image reference"), "{}", String::from_utf8_lossy(&o.stdout));
}
