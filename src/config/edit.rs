//! Runtime changes to the running configuration, made on the [`FileConfig`] so that the result
//! goes through the same validation as a file ([`super::build`]) and can be written out again
//! ([`super::show::to_toml`]).
//!
//! These helpers check only what they need to find their target (the pool exists, the server
//! name is taken or free); values such as an address or a weight are judged by the rebuild,
//! which names the key path (`pool.web.servers[2].addr`) like any error in a file.

use super::file::{FileConfig, PoolFile, ServerFile};

impl FileConfig {
    /// Append `server` to `pool`'s `servers`.
    pub fn add_server(&mut self, pool: &str, server: ServerFile) -> Result<(), String> {
        let p = self.pool_mut(pool)?;
        if p.servers.iter().any(|s| s.name == server.name) {
            return Err(format!(
                "pool '{pool}' already has a server named '{}'",
                server.name
            ));
        }
        p.servers.push(server);
        Ok(())
    }

    /// Remove the server `name` from `pool` and return it. The servers after it move up one
    /// place, as if it had never been written.
    pub fn del_server(&mut self, pool: &str, name: &str) -> Result<ServerFile, String> {
        let p = self.pool_mut(pool)?;
        match p.servers.iter().position(|s| s.name == name) {
            Some(i) => Ok(p.servers.remove(i)),
            None => Err(no_server(pool, name)),
        }
    }

    /// Give the server `name` of `pool` the address `addr` (as written in the file: `IP:PORT`
    /// or `host:port`); returns the address it had.
    pub fn set_server_addr(
        &mut self,
        pool: &str,
        name: &str,
        addr: &str,
    ) -> Result<String, String> {
        let s = self.server_mut(pool, name)?;
        Ok(std::mem::replace(&mut s.addr, addr.to_owned()))
    }

    /// Set the `weight` key of the server `name` of `pool`.
    pub fn set_server_weight(&mut self, pool: &str, name: &str, weight: i64) -> Result<(), String> {
        self.server_mut(pool, name)?.weight = Some(weight);
        Ok(())
    }

    fn pool_mut(&mut self, pool: &str) -> Result<&mut PoolFile, String> {
        self.pool
            .get_mut(pool)
            .ok_or_else(|| format!("no pool named '{pool}'"))
    }

    fn server_mut(&mut self, pool: &str, name: &str) -> Result<&mut ServerFile, String> {
        self.pool_mut(pool)?
            .servers
            .iter_mut()
            .find(|s| s.name == name)
            .ok_or_else(|| no_server(pool, name))
    }
}

fn no_server(pool: &str, name: &str) -> String {
    format!("pool '{pool}' has no server named '{name}'")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::show::to_toml;

    const BASE: &str = r#"
[[http]]
name = "www"
listen = ["127.0.0.1:18090"]
default_pool = "web"

[pool.web]
servers = [
  { name = "a", addr = "127.0.0.1:19001" },
  { name = "b", addr = "127.0.0.1:19002", weight = 3 },
]
"#;

    fn base() -> FileConfig {
        toml::from_str(BASE).unwrap()
    }

    fn server(name: &str, addr: &str) -> ServerFile {
        ServerFile::new(name, addr)
    }

    fn names(f: &FileConfig) -> Vec<&str> {
        f.pool["web"]
            .servers
            .iter()
            .map(|s| s.name.as_str())
            .collect()
    }

    /// Validate the edited file as the daemon will: written out, then built.
    fn rebuild(f: &FileConfig) -> Result<crate::config::Config, String> {
        crate::config::from_str(&to_toml(f), "<edit>").map_err(|e| e.to_string())
    }

    #[test]
    fn add_server_appends_and_still_validates() {
        let mut f = base();
        let mut c = server("c", "127.0.0.1:19003");
        c.weight = Some(5);
        f.add_server("web", c).unwrap();
        assert_eq!(names(&f), ["a", "b", "c"]);
        let cfg = rebuild(&f).unwrap();
        assert_eq!(cfg.pools[0].servers[2].name, "c");
        assert_eq!(cfg.pools[0].servers[2].weight, 5);
    }

    #[test]
    fn add_server_errors() {
        let mut f = base();
        assert_eq!(
            f.add_server("api", server("c", "127.0.0.1:1")),
            Err("no pool named 'api'".to_owned())
        );
        assert_eq!(
            f.add_server("web", server("a", "127.0.0.1:1")),
            Err("pool 'web' already has a server named 'a'".to_owned())
        );
        assert_eq!(f, base(), "a refused edit changes nothing");
    }

    #[test]
    fn a_bad_address_is_left_to_the_rebuild() {
        let mut f = base();
        f.add_server("web", server("c", "not an address")).unwrap();
        let e = rebuild(&f).unwrap_err();
        assert!(e.contains("pool.web.servers[2].addr: "), "{e}");
        assert!(e.contains("not an address"), "{e}");
    }

    #[test]
    fn del_server_removes_and_returns_it() {
        let mut f = base();
        let gone = f.del_server("web", "a").unwrap();
        assert_eq!(gone.addr, "127.0.0.1:19001");
        assert_eq!(names(&f), ["b"]);
        rebuild(&f).unwrap();
        assert_eq!(
            f.del_server("web", "a"),
            Err("pool 'web' has no server named 'a'".to_owned())
        );
        assert_eq!(
            f.del_server("api", "b"),
            Err("no pool named 'api'".to_owned())
        );
        // The last server can go; the rebuild says a pool needs one.
        f.del_server("web", "b").unwrap();
        let e = rebuild(&f).unwrap_err();
        assert!(e.contains("pool.web.servers: "), "{e}");
    }

    #[test]
    fn set_server_addr_returns_the_old_one() {
        let mut f = base();
        let old = f.set_server_addr("web", "b", "127.0.0.1:19999").unwrap();
        assert_eq!(old, "127.0.0.1:19002");
        let cfg = rebuild(&f).unwrap();
        assert_eq!(cfg.pools[0].servers[1].addr.port(), 19999);
        assert_eq!(
            f.set_server_addr("web", "x", "127.0.0.1:1"),
            Err("pool 'web' has no server named 'x'".to_owned())
        );
        assert_eq!(
            f.set_server_addr("api", "a", "127.0.0.1:1"),
            Err("no pool named 'api'".to_owned())
        );
        f.set_server_addr("web", "a", "127.0.0.1").unwrap();
        let e = rebuild(&f).unwrap_err();
        assert!(e.contains("pool.web.servers[0].addr: "), "{e}");
    }

    #[test]
    fn set_server_weight_sets_the_key() {
        let mut f = base();
        f.set_server_weight("web", "a", 7).unwrap();
        assert_eq!(f.pool["web"].servers[0].weight, Some(7));
        let cfg = rebuild(&f).unwrap();
        assert_eq!(cfg.pools[0].servers[0].weight, 7);
        assert_eq!(
            f.set_server_weight("web", "x", 1),
            Err("pool 'web' has no server named 'x'".to_owned())
        );
        assert_eq!(
            f.set_server_weight("api", "a", 1),
            Err("no pool named 'api'".to_owned())
        );
        f.set_server_weight("web", "b", 5000).unwrap();
        let e = rebuild(&f).unwrap_err();
        assert!(e.contains("pool.web.servers[1].weight: "), "{e}");
    }
}
