//! Loads ONNX Runtime for sieve and builds inference sessions.
//!
//! ONNX Runtime is loaded dynamically (`ort`'s `load-dynamic` feature) because its download step
//! cannot run on every machine. The shared library is looked up, in order, from
//! 1. the `SIEVE_ORT_LIB` environment variable,
//! 2. the `ORT_DYLIB_PATH` environment variable (the variable `ort` itself documents),
//! 3. the project-local install made by `scripts/setup.sh`
//!    (`.sieve/onnxruntime/onnxruntime/capi/libonnxruntime.so.*`), searched for beside the running
//!    executable, in the current directory and their ancestors.
//!
//! `ort` allows exactly one environment per process, so [`runtime`] initialises it once and caches
//! the outcome (success or error) in a [`OnceLock`]; every session in the process shares it.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub use ort;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

/// The version of the ONNX Runtime wheel that `scripts/setup.sh` installs.
pub const ORT_VERSION: &str = "1.31.1";

/// Where `scripts/setup.sh` installs the ONNX Runtime wheel, relative to the repository root.
pub const LOCAL_INSTALL_DIR: &str = ".sieve/onnxruntime";

/// Errors from loading ONNX Runtime or a model.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OnnxError {
    /// No ONNX Runtime shared library was found anywhere it is looked for.
    #[error(
        "ONNX Runtime library not found: set SIEVE_ORT_LIB (or ORT_DYLIB_PATH) to the path of \
         libonnxruntime.so.{ORT_VERSION}, or run scripts/setup.sh to install it under \
         {LOCAL_INSTALL_DIR}/ (looked in: {looked})"
    )]
    LibraryNotFound {
        /// The places that were searched, for the error message.
        looked: String,
    },
    /// The library exists but could not be loaded or initialised.
    #[error("could not load ONNX Runtime from {path}: {message}")]
    LibraryLoad {
        /// The library file that was tried.
        path: PathBuf,
        /// What ONNX Runtime or the loader said.
        message: String,
    },
    /// The model file does not exist.
    #[error("model file not found: {0}")]
    ModelNotFound(PathBuf),
    /// ONNX Runtime refused the model (corrupt file, unsupported operator, ...).
    #[error("could not load ONNX model {path}: {message}")]
    ModelLoad {
        /// The model file.
        path: PathBuf,
        /// What ONNX Runtime said.
        message: String,
    },
    /// The CUDA execution provider was asked for but cannot be used.
    #[error("CUDA was requested but is unavailable: {0}")]
    CudaUnavailable(String),
}

/// The process-wide ONNX Runtime: the loaded library and the one environment every session uses.
#[derive(Clone)]
pub struct RuntimeInfo {
    /// The shared library that was loaded (shown by `--explain` and recorded in manifests).
    pub library: PathBuf,
    /// The environment; kept alive here for the whole process (ort allows only one, ever).
    environment: ort::environment::Environment,
}

impl std::fmt::Debug for RuntimeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeInfo")
            .field("library", &self.library)
            .finish()
    }
}

static RUNTIME: OnceLock<Result<RuntimeInfo, OnnxError>> = OnceLock::new();

/// Initialises ONNX Runtime once for this process and returns what was loaded.
///
/// Later calls return the cached outcome; a failed first attempt keeps failing with the same
/// error (ONNX Runtime cannot be initialised twice in one process).
pub fn runtime() -> Result<&'static RuntimeInfo, OnnxError> {
    RUNTIME
        .get_or_init(|| {
            let library = find_library()?;
            let environment = init_environment(&library)?;
            Ok(RuntimeInfo {
                library,
                environment,
            })
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn init_environment(library: &Path) -> Result<ort::environment::Environment, OnnxError> {
    let load_err = |message: String| OnnxError::LibraryLoad {
        path: library.to_path_buf(),
        message,
    };
    let builder = ort::init_from(library).map_err(|e| load_err(e.to_string()))?;
    builder
        .with_name("sieve")
        .build()
        .map_err(|e| load_err(e.to_string()))
}

/// Finds the ONNX Runtime shared library (see the crate docs for the search order).
pub fn find_library() -> Result<PathBuf, OnnxError> {
    let mut looked = Vec::new();
    for var in ["SIEVE_ORT_LIB", "ORT_DYLIB_PATH"] {
        if let Some(value) = std::env::var_os(var) {
            let path = PathBuf::from(value);
            if path.is_file() {
                return Ok(path);
            }
            looked.push(format!("{var}={}", path.display()));
        }
    }
    for root in search_roots() {
        let capi = root.join(LOCAL_INSTALL_DIR).join("onnxruntime/capi");
        if let Some(lib) = library_in(&capi) {
            return Ok(lib);
        }
        looked.push(capi.display().to_string());
    }
    Err(OnnxError::LibraryNotFound {
        looked: looked.join(", "),
    })
}

/// Directories whose `.sieve/onnxruntime` may hold the project-local install: the executable's
/// ancestors (covers `target/release/sieve` inside the repo), then the current directory's.
fn search_roots() -> Vec<PathBuf> {
    let mut roots: Vec<PathBuf> = Vec::new();
    let mut push_ancestors = |start: &Path| {
        for dir in start.ancestors() {
            if !roots.iter().any(|r| r == dir) {
                roots.push(dir.to_path_buf());
            }
        }
    };
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        push_ancestors(dir);
    }
    if let Ok(cwd) = std::env::current_dir() {
        push_ancestors(&cwd);
    }
    roots
}

fn library_in(capi: &Path) -> Option<PathBuf> {
    let exact = capi.join(format!("libonnxruntime.so.{ORT_VERSION}"));
    if exact.is_file() {
        return Some(exact);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(capi)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so.") || n == "libonnxruntime.dylib")
        })
        .collect();
    found.sort();
    found.pop()
}

/// Where a session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU execution provider (default).
    #[default]
    Cpu,
    /// ONNX Runtime's CUDA execution provider on the given GPU. Requires the `cuda` cargo feature
    /// and an ONNX Runtime build with CUDA (PyPI `onnxruntime-gpu`); never silently falls back.
    Cuda(i32),
}

/// How to build a session.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Threads inside one operator; defaults to the number of cores.
    pub intra_threads: usize,
    /// Where to run.
    pub device: Device,
    /// Whether the operator threads spin (busy-wait) between runs instead of sleeping. On by
    /// default (ONNX Runtime's own default): one session called back to back gains from it
    /// (embedding NFCorpus for an index, 2 cores: 47 s spinning, 63 s not). Off where a caller
    /// alternates between sessions, as the late-joined reranker does (query tower, block 7,
    /// block 8): there each session's spinning threads take the cores the next one needs
    /// (`CrossEncoderConfig`'s default turns it off; on 2 cores, SciFact test, 100 queries,
    /// window 100, int8: full-depth rerank 128 ms off against 147 ms on, the cascade
    /// `100@6,35@7,30@8` 46 ms against 73 ms).
    pub spinning: bool,
}

impl Default for SessionOptions {
    fn default() -> Self {
        Self {
            intra_threads: available_cores(),
            device: Device::Cpu,
            spinning: true,
        }
    }
}

/// The number of cores this process may use (1 if unknown).
pub fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Loads an ONNX model into a session with graph optimisation level 3.
pub fn load_session(path: &Path, options: &SessionOptions) -> Result<Session, OnnxError> {
    let runtime = runtime()?;
    if !path.is_file() {
        return Err(OnnxError::ModelNotFound(path.to_path_buf()));
    }
    build_session(&runtime.environment, path, options).map_err(|e| match e {
        BuildError::Cuda(message) => OnnxError::CudaUnavailable(message),
        BuildError::Ort(message) => OnnxError::ModelLoad {
            path: path.to_path_buf(),
            message,
        },
    })
}

enum BuildError {
    Cuda(String),
    Ort(String),
}

// ort's builder errors carry the builder and are not Send + Sync: convert them to strings here.
fn build_session(
    environment: &ort::environment::Environment,
    path: &Path,
    options: &SessionOptions,
) -> Result<Session, BuildError> {
    let ort_err =
        |e: ort::Error<ort::session::builder::SessionBuilder>| BuildError::Ort(e.to_string());
    let mut builder = Session::builder(environment)
        .map_err(|e| BuildError::Ort(e.to_string()))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(ort_err)?
        .with_intra_threads(options.intra_threads.max(1))
        .map_err(ort_err)?
        .with_intra_op_spinning(options.spinning)
        .map_err(ort_err)?;
    if let Device::Cuda(device_id) = options.device {
        builder = with_cuda(builder, device_id)?;
    }
    builder
        .commit_from_file(path)
        .map_err(|e| BuildError::Ort(e.to_string()))
}

#[cfg(feature = "cuda")]
fn with_cuda(
    builder: ort::session::builder::SessionBuilder,
    device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, BuildError> {
    use ort::ep::ExecutionProvider;
    let cuda = ort::ep::CUDA::default().with_device_id(device_id);
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            return Err(BuildError::Cuda(
                "the loaded ONNX Runtime has no CUDA execution provider (install the \
                 onnxruntime-gpu wheel and point SIEVE_ORT_LIB at its library)"
                    .into(),
            ));
        }
        Err(e) => return Err(BuildError::Cuda(e.to_string())),
    }
    builder
        .with_execution_providers([cuda.build().error_on_failure()])
        .map_err(|e| BuildError::Cuda(e.to_string()))
}

#[cfg(not(feature = "cuda"))]
fn with_cuda(
    _builder: ort::session::builder::SessionBuilder,
    _device_id: i32,
) -> Result<ort::session::builder::SessionBuilder, BuildError> {
    Err(BuildError::Cuda(
        "this build of sieve has no CUDA support: rebuild with `--features cuda`".into(),
    ))
}
