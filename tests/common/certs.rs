//! Test certificates made with the `openssl` CLI into a directory (typically the proxy's temp
//! dir, or one made with [`super::proxy::temp_dir`] before the proxy starts): a private CA and
//! leaves signed by it.
//!
//! Files written by [`Certs::generate`] (each `NAME.pem` with its key `NAME.key`):
//! - `ca.pem`/`ca.key`: the private CA (ECDSA P-256);
//! - `a-ec`: ECDSA P-256 for `a.test` + `*.w.test`;
//! - `a-rsa`: RSA-2048 for the same names;
//! - `b`: ECDSA for `b.test`, with a real OCSP response `b.ocsp.der` signed by the CA;
//! - `c-chain.pem`/`c.key`: a leaf for `c.test` signed by an intermediate CA, the file holding
//!   leaf then intermediate;
//! - `nosan`: ECDSA with CN `d.test` and no subjectAltName;
//! - `expired`: ECDSA for `e.test`, already expired;
//! - `mismatch.pem`/`mismatch.key`: a cert for `a.test` with the key of another cert;
//! - `garbage.pem`: a PEM-looking file whose body is not a certificate.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static SERIAL: AtomicU64 = AtomicU64::new(0x1000);

pub struct Certs {
    pub dir: PathBuf,
}

/// Runs `openssl ARGS` in `dir`, panicking with its stderr on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Vec<u8> {
    let child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn openssl: {e}"));
    let out = super::proxy::run_bounded(child, Duration::from_secs(30), "openssl");
    if !out.status.success() {
        panic!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.stdout
}

pub fn next_serial() -> String {
    format!("0x{:x}", SERIAL.fetch_add(1, Ordering::SeqCst))
}

impl Certs {
    /// Generates every file listed in the module doc into `dir`.
    pub fn generate(dir: &Path) -> Certs {
        let c = Certs {
            dir: dir.to_path_buf(),
        };
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "30",
                "-subj",
                "/CN=shardgate test CA",
            ],
        );
        c.leaf("a-ec", "ec", "a.test", &["a.test", "*.w.test"], "ca", 30);
        c.leaf("a-rsa", "rsa", "a.test", &["a.test", "*.w.test"], "ca", 30);
        c.leaf("b", "ec", "b.test", &["b.test"], "ca", 30);
        c.ocsp("b", "b.ocsp.der");
        // Intermediate CA, then a leaf signed by it, the file holding the chain.
        openssl(
            dir,
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "int.key",
                "-out",
                "int.csr",
                "-subj",
                "/CN=shardgate test intermediate",
            ],
        );
        std::fs::write(
            dir.join("int.ext"),
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n",
        )
        .unwrap();
        let serial = next_serial();
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "int.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-set_serial",
                &serial,
                "-days",
                "30",
                "-extfile",
                "int.ext",
                "-out",
                "int.pem",
            ],
        );
        c.leaf("c", "ec", "c.test", &["c.test"], "int", 30);
        let chain = [
            std::fs::read(dir.join("c.pem")).unwrap(),
            std::fs::read(dir.join("int.pem")).unwrap(),
        ]
        .concat();
        std::fs::write(dir.join("c-chain.pem"), chain).unwrap();
        c.leaf("nosan", "ec", "d.test", &[], "ca", 30);
        c.leaf("expired", "ec", "e.test", &["e.test"], "ca", -1);
        c.leaf("other", "ec", "a.test", &["a.test"], "ca", 30);
        std::fs::copy(dir.join("other.pem"), dir.join("mismatch.pem")).unwrap();
        std::fs::copy(dir.join("a-ec.key"), dir.join("mismatch.key")).unwrap();
        std::fs::write(
            dir.join("garbage.pem"),
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGUgYXQgYWxs\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        c
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `NAME.pem` + `NAME.key`: a `kind` ("ec" or "rsa") leaf with CN `cn` and DNS SANs
    /// `sans` (none: no subjectAltName at all), signed by `issuer` (`ca` or `int`), valid for
    /// `days` (negative: already expired). A fresh serial each call.
    pub fn leaf(&self, name: &str, kind: &str, cn: &str, sans: &[&str], issuer: &str, days: i32) {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let subj = format!("/CN={cn}");
        let mut args = vec!["req", "-new", "-newkey"];
        if kind == "rsa" {
            args.extend(["rsa:2048"]);
        } else {
            args.extend(["ec", "-pkeyopt", "ec_paramgen_curve:P-256"]);
        }
        args.extend(["-nodes", "-keyout", &key, "-out", &csr, "-subj", &subj]);
        openssl(&self.dir, &args);
        let mut ext = String::from(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        );
        if !sans.is_empty() {
            let list: Vec<String> = sans.iter().map(|s| format!("DNS:{s}")).collect();
            ext.push_str(&format!("subjectAltName={}\n", list.join(",")));
        }
        let ext_file = format!("{name}.ext");
        std::fs::write(self.dir.join(&ext_file), ext).unwrap();
        let serial = next_serial();
        let days = days.to_string();
        let out = format!("{name}.pem");
        let ca = format!("{issuer}.pem");
        let ca_key = format!("{issuer}.key");
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-days",
                &days,
                "-extfile",
                &ext_file,
                "-out",
                &out,
            ],
        );
    }

    /// A "good" OCSP response for `NAME.pem` (issued by the CA) into `out`.
    pub fn ocsp(&self, name: &str, out: &str) {
        let serial_line = openssl(
            &self.dir,
            &["x509", "-in", &format!("{name}.pem"), "-noout", "-serial"],
        );
        let serial = String::from_utf8_lossy(&serial_line)
            .trim()
            .trim_start_matches("serial=")
            .to_string();
        std::fs::write(
            self.dir.join(format!("{name}.index")),
            format!("V\t301231000000Z\t\t{serial}\tunknown\t/CN={name}\n"),
        )
        .unwrap();
        let req = format!("{name}.ocspreq");
        openssl(
            &self.dir,
            &[
                "ocsp",
                "-issuer",
                "ca.pem",
                "-cert",
                &format!("{name}.pem"),
                "-reqout",
                &req,
                "-no_nonce",
            ],
        );
        openssl(
            &self.dir,
            &[
                "ocsp",
                "-index",
                &format!("{name}.index"),
                "-rsigner",
                "ca.pem",
                "-rkey",
                "ca.key",
                "-CA",
                "ca.pem",
                "-reqin",
                &req,
                "-respout",
                out,
                "-ndays",
                "1",
            ],
        );
    }

    /// The serial of a PEM certificate file, as `openssl x509 -serial` prints it (hex).
    pub fn serial_of(&self, file: &str) -> String {
        let out = openssl(&self.dir, &["x509", "-in", file, "-noout", "-serial"]);
        String::from_utf8_lossy(&out)
            .trim()
            .trim_start_matches("serial=")
            .to_string()
    }
}
