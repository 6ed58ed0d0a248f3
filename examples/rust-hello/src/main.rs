//! The app of the rust-hello example: prints a greeting and, when it runs as the init of an
//! enclave or a RAM-booted machine (PID 1), stays up instead of exiting (an init that exits
//! panics the kernel).

fn main() {
    println!("hello from a stagebox-built image");
    if std::process::id() == 1 {
        loop {
            std::thread::park();
        }
    }
}
