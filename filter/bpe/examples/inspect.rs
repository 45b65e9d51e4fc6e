//! Prints the pre-tokenizer pieces and token ids of the first argument:
//! `cargo run -p tollgate-bpe --example inspect -- "text"`.
fn main() {
    let s = std::env::args().nth(1).unwrap_or_default();
    for enc in tollgate_bpe::Encoding::ALL {
        println!(
            "{} {:?} {:?}",
            enc.name(),
            tollgate_bpe::split(enc, &s),
            enc.encode(&s)
        );
    }
}
