//! The security module: key store, MAC verification and generation, PIN translation, and
//! working-key generation for terminal sign-on — behind [`SecurityModule`], so a hardware HSM
//! can replace the software one ([`SoftHsm`]) without touching the engine.
//!
//! Key hierarchy: terminal side TMK → TPK (PIN) and TAK (MAC), the working keys generated at
//! each sign-on and sent to the terminal under its TMK with check values; host side ZMK → ZPK
//! and ZAK. Keys are stored encrypted at rest with AES-256-GCM under a master key that comes
//! from the environment or a file, never from the key file itself; clear keys exist only in
//! memory, zeroized on drop. Nothing here logs or returns a clear key or PIN.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use openteller_crypto::{self as crypto, Algorithm, Key, MacAlgorithm, PinBlockFormat};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// What a key may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KeyUsage {
    /// Key-encryption key (TMK, ZMK).
    KeyEncryption,
    /// PIN key (TPK, ZPK).
    Pin,
    /// MAC key (TAK, ZAK).
    Mac,
}

/// Security errors. Messages never contain key material or PINs.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// No key of that name.
    #[error("key {0:?} is not in the key store")]
    KeyNotFound(String),
    /// The key exists but not for this use.
    #[error("key {name:?} is a {actual:?} key, not {wanted:?}")]
    WrongUsage {
        /// Key name.
        name: String,
        /// What it is.
        actual: KeyUsage,
        /// What was asked.
        wanted: KeyUsage,
    },
    /// A cryptographic operation refused its input.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The master key is missing or malformed.
    #[error("master key: {0}")]
    MasterKey(String),
    /// The key file cannot be read, decrypted or written.
    #[error("key store {path}: {reason}")]
    Store {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// The operations the engine needs from a security module.
pub trait SecurityModule: Send + Sync {
    /// Generates a MAC over `data` with the MAC key `key`.
    fn generate_mac(
        &self,
        key: &str,
        algorithm: MacAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SecurityError>;
    /// Verifies `mac` (constant time).
    fn verify_mac(
        &self,
        key: &str,
        algorithm: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, SecurityError>;
    /// Re-encrypts a PIN block from one PIN key to another without exposing the PIN.
    fn translate_pin(
        &self,
        from_key: &str,
        from_format: PinBlockFormat,
        block: &[u8],
        to_key: &str,
        to_format: PinBlockFormat,
        pan: &str,
    ) -> Result<Vec<u8>, SecurityError>;
    /// Generates a fresh working key `name` and returns it encrypted under the key-encryption
    /// key `kek`, with its check value (hex).
    fn generate_working_key(
        &self,
        kek: &str,
        name: &str,
        usage: KeyUsage,
    ) -> Result<(Vec<u8>, String), SecurityError>;
}

#[derive(Serialize, Deserialize)]
struct SealedKey {
    name: String,
    usage: KeyUsage,
    algorithm: String,
    kcv: String,
    nonce: String,
    sealed: String,
}

#[derive(Default, Serialize, Deserialize)]
struct KeyFile {
    version: u32,
    keys: Vec<SealedKey>,
}

struct Entry {
    usage: KeyUsage,
    key: Key,
    kcv: String,
}

/// One key as listed (never its value).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyListing {
    /// Name, e.g. `term/T0000001/TAK`.
    pub name: String,
    /// Usage.
    pub usage: KeyUsage,
    /// `TDES` or `SM4`.
    pub algorithm: &'static str,
    /// Check value.
    pub kcv: String,
}

/// The software security module: keys in memory, sealed at rest in a JSON file.
pub struct SoftHsm {
    path: PathBuf,
    master: Zeroizing<[u8; 32]>,
    keys: RwLock<HashMap<String, Entry>>,
}

/// The environment variable holding the master key (64 hex characters).
pub const MASTER_KEY_VAR: &str = "OPENTELLER_MASTER_KEY";

/// Parses a master key from 64 hex characters.
pub fn parse_master_key(text: &str) -> Result<Zeroizing<[u8; 32]>, SecurityError> {
    let bytes = Zeroizing::new(
        hex::decode(text.trim()).map_err(|_| SecurityError::MasterKey("not hex".into()))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != 32 {
        return Err(SecurityError::MasterKey(format!(
            "must be 32 bytes (64 hex characters), not {}",
            bytes.len()
        )));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

fn algorithm_name(a: Algorithm) -> &'static str {
    match a {
        Algorithm::Tdes => "TDES",
        Algorithm::Sm4 => "SM4",
    }
}

impl SoftHsm {
    /// Opens the key file at `path` (created on first save), unsealing every key with `master`.
    pub fn open(path: &Path, master: Zeroizing<[u8; 32]>) -> Result<SoftHsm, SecurityError> {
        let err = |reason: String| SecurityError::Store {
            path: path.to_owned(),
            reason,
        };
        let file: KeyFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => KeyFile {
                version: 1,
                keys: vec![],
            },
            Err(e) => return Err(err(e.to_string())),
        };
        let cipher = Aes256Gcm::new_from_slice(master.as_slice())
            .map_err(|_| SecurityError::MasterKey("bad length".into()))?;
        let mut keys = HashMap::new();
        for s in file.keys {
            let nonce =
                hex::decode(&s.nonce).map_err(|_| err(format!("key {:?}: bad nonce", s.name)))?;
            let sealed = hex::decode(&s.sealed)
                .map_err(|_| err(format!("key {:?}: bad ciphertext", s.name)))?;
            if nonce.len() != 12 {
                return Err(err(format!("key {:?}: bad nonce", s.name)));
            }
            let aad = aad(&s.name, s.usage, &s.algorithm);
            let clear = Zeroizing::new(
                cipher
                    .decrypt(
                        Nonce::from_slice(&nonce),
                        Payload {
                            msg: &sealed,
                            aad: &aad,
                        },
                    )
                    .map_err(|_| {
                        err(format!(
                            "key {:?} does not open with this master key",
                            s.name
                        ))
                    })?,
            );
            let algorithm = if s.algorithm == "SM4" {
                Algorithm::Sm4
            } else {
                Algorithm::Tdes
            };
            let key = Key::new(algorithm, &clear)?;
            keys.insert(
                s.name,
                Entry {
                    usage: s.usage,
                    kcv: crypto::kcv_hex(&key),
                    key,
                },
            );
        }
        Ok(SoftHsm {
            path: path.to_owned(),
            master,
            keys: RwLock::new(keys),
        })
    }

    /// Stores (or replaces) a clear key, checking its KCV when one is given, and saves.
    pub fn import(
        &self,
        name: &str,
        usage: KeyUsage,
        algorithm: Algorithm,
        clear: &[u8],
        expected_kcv: Option<&str>,
    ) -> Result<String, SecurityError> {
        let key = Key::new(algorithm, clear)?;
        let kcv = crypto::kcv_hex(&key);
        if let Some(expected) = expected_kcv.filter(|k| !k.eq_ignore_ascii_case(&kcv)) {
            return Err(crypto::CryptoError::KcvMismatch {
                expected: expected.to_uppercase(),
                actual: kcv,
            }
            .into());
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        let previous = keys.insert(
            name.to_owned(),
            Entry {
                usage,
                key,
                kcv: kcv.clone(),
            },
        );
        if let Err(e) = self.save(&keys, Some((name, clear))) {
            // Keep memory and file in agreement.
            match previous {
                Some(p) => keys.insert(name.to_owned(), p),
                None => keys.remove(name),
            };
            return Err(e);
        }
        Ok(kcv)
    }

    /// Lists the keys (names, usage, algorithm, KCV).
    pub fn list(&self) -> Vec<KeyListing> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<KeyListing> = keys
            .iter()
            .map(|(name, e)| KeyListing {
                name: name.clone(),
                usage: e.usage,
                algorithm: algorithm_name(e.key.algorithm()),
                kcv: e.kcv.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Writes the sealed key file atomically. `fresh` is the clear value of a key just added
    /// (other keys are re-sealed from memory via their stored clear bytes).
    fn save(
        &self,
        keys: &HashMap<String, Entry>,
        fresh: Option<(&str, &[u8])>,
    ) -> Result<(), SecurityError> {
        let err = |reason: String| SecurityError::Store {
            path: self.path.clone(),
            reason,
        };
        let cipher = Aes256Gcm::new_from_slice(self.master.as_slice())
            .map_err(|_| SecurityError::MasterKey("bad length".into()))?;
        // The sealed entries of keys other than `fresh` are carried over from the file; only
        // the fresh key is sealed anew, since `Key` does not give its bytes back.
        let mut file: KeyFile = match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| err(e.to_string()))?,
            Err(_) => KeyFile {
                version: 1,
                keys: vec![],
            },
        };
        file.version = 1;
        file.keys
            .retain(|k| keys.contains_key(&k.name) && fresh.is_none_or(|(n, _)| n != k.name));
        if let Some((name, clear)) = fresh {
            let entry = &keys[name];
            let algorithm = algorithm_name(entry.key.algorithm());
            let mut nonce = [0u8; 12];
            rand::rng().fill_bytes(&mut nonce);
            let aad = aad(name, entry.usage, algorithm);
            let sealed = cipher
                .encrypt(
                    Nonce::from_slice(&nonce),
                    Payload {
                        msg: clear,
                        aad: &aad,
                    },
                )
                .map_err(|_| err("sealing failed".into()))?;
            file.keys.push(SealedKey {
                name: name.to_owned(),
                usage: entry.usage,
                algorithm: algorithm.to_owned(),
                kcv: entry.kcv.clone(),
                nonce: hex::encode(nonce),
                sealed: hex::encode(sealed),
            });
        }
        let json = serde_json::to_vec_pretty(&file).map_err(|e| err(e.to_string()))?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        }
        let tmp = self.path.with_extension("tmp");
        write_private(&tmp, &json).map_err(|e| err(e.to_string()))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| err(e.to_string()))
    }

    fn with_key<T>(
        &self,
        name: &str,
        usage: KeyUsage,
        f: impl FnOnce(&Key) -> Result<T, SecurityError>,
    ) -> Result<T, SecurityError> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let entry = keys
            .get(name)
            .ok_or_else(|| SecurityError::KeyNotFound(name.to_owned()))?;
        if entry.usage != usage {
            return Err(SecurityError::WrongUsage {
                name: name.to_owned(),
                actual: entry.usage,
                wanted: usage,
            });
        }
        f(&entry.key)
    }
}

fn aad(name: &str, usage: KeyUsage, algorithm: &str) -> Vec<u8> {
    format!("openteller-key|{name}|{usage:?}|{algorithm}").into_bytes()
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

impl SecurityModule for SoftHsm {
    fn generate_mac(
        &self,
        key: &str,
        algorithm: MacAlgorithm,
        data: &[u8],
    ) -> Result<Vec<u8>, SecurityError> {
        self.with_key(key, KeyUsage::Mac, |k| Ok(crypto::mac(algorithm, k, data)?))
    }

    fn verify_mac(
        &self,
        key: &str,
        algorithm: MacAlgorithm,
        data: &[u8],
        mac: &[u8],
    ) -> Result<bool, SecurityError> {
        self.with_key(key, KeyUsage::Mac, |k| {
            Ok(crypto::verify_mac(algorithm, k, data, mac)?)
        })
    }

    fn translate_pin(
        &self,
        from_key: &str,
        from_format: PinBlockFormat,
        block: &[u8],
        to_key: &str,
        to_format: PinBlockFormat,
        pan: &str,
    ) -> Result<Vec<u8>, SecurityError> {
        self.with_key(from_key, KeyUsage::Pin, |from| {
            self.with_key(to_key, KeyUsage::Pin, |to| {
                Ok(crypto::translate_pin_block(
                    from,
                    from_format,
                    block,
                    to,
                    to_format,
                    pan,
                )?)
            })
        })
    }

    fn generate_working_key(
        &self,
        kek: &str,
        name: &str,
        usage: KeyUsage,
    ) -> Result<(Vec<u8>, String), SecurityError> {
        let (algorithm, wrapped, clear) =
            self.with_key(kek, KeyUsage::KeyEncryption, |kek_key| {
                let algorithm = kek_key.algorithm();
                let mut clear = Zeroizing::new(vec![0u8; 16]);
                rand::rng().fill_bytes(&mut clear);
                let wrapped = crypto::ecb_encrypt(kek_key, &clear)?;
                Ok((algorithm, wrapped, clear))
            })?;
        let kcv = self.import(name, usage, algorithm, &clear, None)?;
        Ok((wrapped, kcv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master() -> Zeroizing<[u8; 32]> {
        parse_master_key(&"11".repeat(32)).unwrap()
    }

    #[test]
    fn keys_are_sealed_at_rest_and_reopen_only_with_the_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let hsm = SoftHsm::open(&path, master()).unwrap();
        let clear = hex::decode("0123456789ABCDEFFEDCBA9876543210").unwrap();
        let kcv = hsm
            .import(
                "term/T1/TMK",
                KeyUsage::KeyEncryption,
                Algorithm::Tdes,
                &clear,
                Some("08d7b4"),
            )
            .unwrap();
        assert_eq!(kcv, "08D7B4");
        assert!(
            hsm.import("x", KeyUsage::Mac, Algorithm::Tdes, &clear, Some("000000"))
                .is_err()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.to_uppercase().contains("0123456789ABCDEF"),
            "the clear key must not be in the file"
        );
        let (wrapped, tak_kcv) = hsm
            .generate_working_key("term/T1/TMK", "term/T1/TAK", KeyUsage::Mac)
            .unwrap();
        assert_eq!(wrapped.len(), 16);

        let again = SoftHsm::open(&path, master()).unwrap();
        assert_eq!(again.list(), hsm.list());
        assert!(
            again
                .list()
                .iter()
                .any(|k| k.name == "term/T1/TAK" && k.kcv == tak_kcv)
        );
        let wrong = parse_master_key(&"22".repeat(32)).unwrap();
        assert!(SoftHsm::open(&path, wrong).is_err());
        assert!(parse_master_key("abcd").is_err());
    }

    #[test]
    fn usage_is_enforced_and_pins_translate() {
        let dir = tempfile::tempdir().unwrap();
        let hsm = SoftHsm::open(&dir.path().join("k.json"), master()).unwrap();
        let tpk = hex::decode("11223344556677888877665544332211").unwrap();
        let zpk = hex::decode("0123456789abcdeffedcba9876543210").unwrap();
        hsm.import("TPK", KeyUsage::Pin, Algorithm::Tdes, &tpk, None)
            .unwrap();
        hsm.import("ZPK", KeyUsage::Pin, Algorithm::Sm4, &zpk, None)
            .unwrap();
        let pan = "6222020200112233445";
        let block = crypto::encrypt_pin_block(
            PinBlockFormat::Iso0,
            "1234",
            pan,
            &Key::new(Algorithm::Tdes, &tpk).unwrap(),
        )
        .unwrap();
        let out = hsm
            .translate_pin(
                "TPK",
                PinBlockFormat::Iso0,
                &block,
                "ZPK",
                PinBlockFormat::Sm4Iso0,
                pan,
            )
            .unwrap();
        let pin = crypto::extract_pin(
            PinBlockFormat::Sm4Iso0,
            &out,
            pan,
            &Key::new(Algorithm::Sm4, &zpk).unwrap(),
        )
        .unwrap();
        assert_eq!(pin.as_str(), "1234");
        assert!(matches!(
            hsm.generate_mac("TPK", MacAlgorithm::AnsiX919, b"x"),
            Err(SecurityError::WrongUsage { .. })
        ));
        assert!(matches!(
            hsm.generate_mac("nope", MacAlgorithm::AnsiX919, b"x"),
            Err(SecurityError::KeyNotFound(_))
        ));
    }
}
