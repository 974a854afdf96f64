//! `profile-api`: see `profile-api --help`.

fn main() -> std::process::ExitCode {
    profile_api::run()
}
