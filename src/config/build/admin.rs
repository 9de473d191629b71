//! The `[admin]` section: the admin listener's address and its users.
//!
//! The page can change servers, so it must never be open to the network by accident: a
//! `listen` that is not a loopback address needs at least one user. Each user's
//! `password_hash` must be an argon2 PHC string whose parameters argon2 accepts, so a typo is
//! found at load and not at the first login; the role is `admin` or `read`.

use std::net::SocketAddr;

use super::frontend::listen_overlaps;
use super::{Builder, ConfigError};
use crate::config::file::AdminFile;
use crate::config::{Admin, AdminRole, AdminUser};

impl Builder<'_> {
    /// `listens`: every frontend address already accepted, with its owner for messages.
    pub(super) fn admin(
        &self,
        a: &AdminFile,
        listens: &[(SocketAddr, String)],
    ) -> Result<Admin, ConfigError> {
        let listen: SocketAddr = a.listen.trim().parse().map_err(|_| {
            self.err(
                "admin.listen",
                format!(
                    "{:?} is not IP:PORT (e.g. \"127.0.0.1:9900\" or \"[::1]:9900\")",
                    a.listen
                ),
            )
        })?;
        if let Some((_, other)) = listens.iter().find(|(l, _)| listen_overlaps(l, &listen)) {
            return Err(self.err("admin.listen", format!("{:?} overlaps {other}", a.listen)));
        }
        if a.users.is_empty() && !listen.ip().is_loopback() {
            return Err(self.err(
                "admin.listen",
                format!(
                    "{listen} is not a loopback address and admin.users is empty: the admin page \
                     must never be open to the network; add users (shardgate hash-password \
                     makes a password_hash) or listen on 127.0.0.1 or [::1]"
                ),
            ));
        }
        let mut users: Vec<AdminUser> = Vec::with_capacity(a.users.len());
        for (i, u) in a.users.iter().enumerate() {
            let key = format!("admin.users[{i}]");
            if u.name.is_empty() || u.name.contains(':') || u.name.chars().any(char::is_control) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!(
                        "{:?}: a user name must be non-empty, without ':' or control characters \
                         (HTTP Basic auth)",
                        u.name
                    ),
                ));
            }
            if users.iter().any(|x| x.name == u.name) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("{:?} is listed twice", u.name),
                ));
            }
            check_hash(&u.password_hash)
                .map_err(|m| self.err(format!("{key}.password_hash"), m))?;
            let role = match u.role.as_deref().unwrap_or("read") {
                "admin" => AdminRole::Admin,
                "read" => AdminRole::Read,
                other => {
                    return Err(self.err(
                        format!("{key}.role"),
                        format!("{other:?} is not a role: expected \"admin\" or \"read\""),
                    ))
                }
            };
            users.push(AdminUser {
                name: u.name.clone(),
                password_hash: u.password_hash.clone(),
                role,
            });
        }
        Ok(Admin { listen, users })
    }
}

/// `Ok` if `s` is an argon2 PHC string (`$argon2id$v=19$m=...,t=...,p=...$SALT$HASH`) that
/// argon2 can verify against.
fn check_hash(s: &str) -> Result<(), String> {
    use argon2::password_hash::phc::PasswordHash;
    let bad = |why: String| {
        format!("not a valid argon2 PHC string ({why}); make one with `shardgate hash-password`")
    };
    let hash = PasswordHash::new(s).map_err(|e| bad(e.to_string()))?;
    let alg = hash.algorithm.as_str();
    if !matches!(alg, "argon2id" | "argon2i" | "argon2d") {
        return Err(bad(format!("algorithm {alg:?}, expected argon2id")));
    }
    argon2::Params::try_from(&hash).map_err(|e| bad(format!("parameters: {e}")))?;
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(bad("no salt or no hash".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::check_hash;

    #[test]
    fn hashes_are_checked() {
        use argon2::password_hash::PasswordHasher;
        let good = argon2::Argon2::default()
            .hash_password(b"pw")
            .unwrap()
            .to_string();
        assert!(check_hash(&good).is_ok(), "{good}");
        for bad in [
            "",
            "plain",
            "$2b$12$abcdefghijklmnopqrstuu",
            "$argon2id$v=19$m=1,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
            "$pbkdf2-sha256$i=1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA",
        ] {
            assert!(check_hash(bad).is_err(), "{bad}");
        }
    }
}
