//! Grows its memory 1 MiB at a time (touching every page) until it fails.
fn main() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut chunk = vec![0u8; 1 << 20];
        for page in chunk.chunks_mut(4096) {
            page[0] = chunks.len() as u8;
        }
        chunks.push(chunk);
        println!("allocated {} MiB", chunks.len());
    }
}
