//! The embedded read models on disk, in blue/green generations ([`projections::generations`]).
//!
//! Generation 0 of every projection is the shared `readmodels.sqlite` (what a data directory
//! has always had); generation N > 0 of a projection is its own file,
//! `readmodels.<projection>.<N>.sqlite`. `readmodels.generations.json` records each projection's
//! live generation and the version of the projection that built it. It is replaced whole
//! (written to a temporary file, synced, renamed, the directory synced), so a crash leaves the
//! old pointer or the new one; a generation file the pointer does not name is a rebuild that
//! did not finish, and the next rebuild starts it again from nothing.

use crate::compose::{private_file, READ_MODELS_FILE};
use anyhow::Context;
use async_trait::async_trait;
use infrastructure::sqlite::SqliteReadModelStore;
use projections::generations::Prepared;
use projections::store::ReadModelResult;
use projections::{GenerationRouter, Generations, Projection, ReadModelError, ReadModelStore};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The pointer file, in the data directory.
pub const GENERATIONS_FILE: &str = "readmodels.generations.json";

/// A projection's live generation, and the version of the projection that built it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    pub generation: u64,
    pub version: u32,
}

/// A data directory's read models.
pub struct EmbeddedReadModels {
    /// What the process reads and writes: each projection's live generation.
    pub models: Arc<dyn ReadModelStore>,
    pub generations: Arc<FileGenerations>,
    /// The projections whose stored version is older than their code's: rebuild them.
    pub outdated: Vec<&'static str>,
}

/// Opens the read models of `data_dir` for `projections`. A projection the pointer does not
/// know yet (a new directory, or one from before generations) is recorded at generation 0 with
/// its current version.
pub async fn open(
    data_dir: &Path,
    projections: &[Arc<dyn Projection>],
) -> anyhow::Result<EmbeddedReadModels> {
    let shared = open_store(data_dir.join(READ_MODELS_FILE)).await?;
    let pointer_path = data_dir.join(GENERATIONS_FILE);
    let mut pointer: BTreeMap<String, Live> = match std::fs::read(&pointer_path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("reading {}", pointer_path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", pointer_path.display())),
    };
    let mut live: BTreeMap<&'static str, Arc<dyn ReadModelStore>> = BTreeMap::new();
    let mut outdated = Vec::new();
    for p in projections {
        let entry = *pointer.entry(p.name().to_owned()).or_insert(Live {
            generation: 0,
            version: p.version(),
        });
        let store = match entry.generation {
            0 => shared.clone(),
            n => open_store(generation_file(data_dir, p.name(), n)).await?,
        };
        live.insert(p.name(), store);
        if entry.version < p.version() {
            outdated.push(p.name());
        }
    }
    write_pointer(data_dir, &pointer)?;
    let router = Arc::new(GenerationRouter::new(projections, |name| {
        live[name].clone()
    }));
    Ok(EmbeddedReadModels {
        models: router.clone(),
        generations: Arc::new(FileGenerations {
            dir: data_dir.to_owned(),
            shared,
            router,
            pointer: tokio::sync::Mutex::new(pointer),
        }),
        outdated,
    })
}

fn generation_file(dir: &Path, projection: &str, generation: u64) -> PathBuf {
    dir.join(format!("readmodels.{projection}.{generation}.sqlite"))
}

async fn open_store(path: PathBuf) -> anyhow::Result<Arc<dyn ReadModelStore>> {
    private_file(&path)?;
    let store = tokio::task::spawn_blocking(move || SqliteReadModelStore::open(&path))
        .await
        .context("opening the read models")??;
    Ok(Arc::new(store))
}

/// Removes a generation's database and its WAL and shared-memory files.
fn remove_generation(path: &Path) -> std::io::Result<()> {
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

fn write_pointer(dir: &Path, pointer: &BTreeMap<String, Live>) -> anyhow::Result<()> {
    let path = dir.join(GENERATIONS_FILE);
    let temporary = dir.join(format!("{GENERATIONS_FILE}.tmp"));
    private_file(&temporary)?;
    let bytes = serde_json::to_vec_pretty(pointer)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&temporary)
        .with_context(|| format!("writing {}", temporary.display()))?;
    std::io::Write::write_all(&mut file, &bytes)?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path).with_context(|| format!("replacing {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

/// The [`Generations`] of a data directory: new generations are new files.
pub struct FileGenerations {
    dir: PathBuf,
    shared: Arc<dyn ReadModelStore>,
    router: Arc<GenerationRouter>,
    /// Held across a promotion, so two promotions write the pointer one after the other.
    pointer: tokio::sync::Mutex<BTreeMap<String, Live>>,
}

impl FileGenerations {
    /// The live generation of every projection.
    pub async fn live(&self) -> BTreeMap<String, Live> {
        self.pointer.lock().await.clone()
    }
}

fn io_error(what: &str, e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Unavailable(format!("{what}: {e}"))
}

#[async_trait]
impl Generations for FileGenerations {
    async fn prepare(&self, projection: &dyn Projection) -> ReadModelResult<Prepared> {
        let live = self
            .pointer
            .lock()
            .await
            .get(projection.name())
            .map_or(0, |l| l.generation);
        let generation = live + 1;
        let path = generation_file(&self.dir, projection.name(), generation);
        // What an unfinished earlier attempt left.
        remove_generation(&path).map_err(|e| io_error("removing an unfinished generation", e))?;
        let store = open_store(path)
            .await
            .map_err(|e| io_error("creating a generation", e))?;
        Ok(Prepared { generation, store })
    }

    async fn promote(&self, projection: &dyn Projection, next: &Prepared) -> ReadModelResult<u64> {
        let Prepared { generation, store } = next.clone();
        let mut pointer = self.pointer.lock().await;
        let previous = pointer.get(projection.name()).map_or(0, |l| l.generation);
        let mut updated = pointer.clone();
        updated.insert(
            projection.name().to_owned(),
            Live {
                generation,
                version: projection.version(),
            },
        );
        write_pointer(&self.dir, &updated).map_err(|e| io_error("promoting a generation", e))?;
        *pointer = updated;
        self.router.switch(projection.name(), store);
        Ok(previous)
    }

    async fn drop_replaced(
        &self,
        projection: &dyn Projection,
        generation: u64,
    ) -> ReadModelResult<()> {
        match generation {
            0 => self.shared.reset(projection).await,
            n => remove_generation(&generation_file(&self.dir, projection.name(), n))
                .map_err(|e| io_error("dropping the replaced generation", e)),
        }
    }
}
