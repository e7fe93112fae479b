//! `ambackup --config CFG list|check|backup [DLE...]`: asks the server for a backup of this
//! host's DLEs over a connection this host opens (see `amandad::ambackup`).

fn main() {
    let args = match amandad::ambackup::Args::parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ambackup: {e:#}");
            std::process::exit(2);
        }
    };
    match amandad::ambackup::main(&args) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("ambackup: {e:#}");
            std::process::exit(1);
        }
    }
}
