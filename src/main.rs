#![forbid(unsafe_code)]

fn main() {
    std::process::exit(smsguard::cli::main());
}
