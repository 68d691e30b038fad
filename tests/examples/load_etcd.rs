//! Fills an etcd with `COUNT` keys of `SIZE`-byte random printable values, `CONCURRENCY` puts at a time.
//! Usage: load_etcd ENDPOINT COUNT SIZE
use rand::distr::Alphanumeric;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const CONCURRENCY: usize = 64;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(args.len() == 4, "usage: load_etcd ENDPOINT COUNT SIZE");
    let (endpoint, count, size) = (args[1].clone(), args[2].parse::<usize>()?, args[3].parse::<usize>()?);
    let client = etcd_client::Client::connect([endpoint], None).await?;
    let mut workers = Vec::new();
    for worker in 0..CONCURRENCY {
        let mut kv = client.kv_client();
        workers.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(worker as u64);
            for i in (worker..count).step_by(CONCURRENCY) {
                let value: String = (&mut rng).sample_iter(&Alphanumeric).take(size).map(char::from).collect();
                kv.put(format!("/bench/{i:08}"), value, None).await?;
            }
            Ok::<_, etcd_client::Error>(())
        }));
    }
    for worker in workers {
        worker.await??;
    }
    Ok(())
}
