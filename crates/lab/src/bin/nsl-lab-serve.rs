//! Standalone pod listener (`nsl-lab-serve 8080/tcp 8080/udp`), the same code as the hidden
//! `netsleuth lab serve`; used by this crate's tests, which cannot rely on the `netsleuth` binary.

fn main() -> std::process::ExitCode {
    let ports: Result<Vec<lab::ListenPort>, String> =
        std::env::args().skip(1).map(|a| a.parse()).collect();
    let result = ports
        .map_err(|e| e.to_string())
        .and_then(|ports| lab::serve::serve(&ports).map_err(|e| e.to_string()));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("nsl-lab-serve: {message}");
            std::process::ExitCode::from(2)
        }
    }
}
