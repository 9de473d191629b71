//! `[[site]]` tables: a name, HTTP hosts and MySQL users billed together (`src/site.rs`).
//! Every host pattern and every user belongs to at most one site, so that no traffic is ever
//! billed twice; a host written as it would never be counted (a port, `-`, longer than a site
//! key can be) is refused.

use std::collections::HashMap;

use super::{Builder, ConfigError};
use crate::config::file::SiteFile;
use crate::config::HostPattern;
use crate::site::{Site, Sites};

/// Longest site name (it is a column of `show traffic site` and of the traffic log).
const MAX_NAME: usize = 255;

impl Builder<'_> {
    pub(super) fn sites(&self, list: &[SiteFile]) -> Result<Sites, ConfigError> {
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut hosts: HashMap<HostPattern, (usize, String)> = HashMap::new();
        let mut users: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(list.len());
        let owner = |j: usize| format!("site[{j}] ({:?})", list[j].name);
        for (i, s) in list.iter().enumerate() {
            let key = format!("site[{i}]");
            self.site_name(&format!("{key}.name"), &s.name)?;
            if let Some(j) = names.insert(s.name.as_str(), i) {
                return Err(self.err(
                    format!("{key}.name"),
                    format!("{:?} is already the name of site[{j}]", s.name),
                ));
            }
            let mut patterns = Vec::with_capacity(s.hosts.len());
            for (h, text) in s.hosts.iter().enumerate() {
                let k = format!("{key}.hosts[{h}]");
                let p = self.site_host(&k, text)?;
                if let Some((j, other)) = hosts.get(&p) {
                    let problem = if *j == i {
                        format!("{text:?} is listed twice (also {other})")
                    } else {
                        format!(
                            "{text:?} is already a host of {} ({other}); a host belongs to one site",
                            owner(*j)
                        )
                    };
                    return Err(self.err(k, problem));
                }
                hosts.insert(p.clone(), (i, k));
                patterns.push(p);
            }
            for (u, user) in s.mysql_users.iter().enumerate() {
                let k = format!("{key}.mysql_users[{u}]");
                self.site_user(&k, user)?;
                if let Some(j) = users.insert(user.as_str(), i) {
                    let problem = if j == i {
                        format!("{user:?} is listed twice")
                    } else {
                        format!(
                            "{user:?} is already a MySQL user of {}; a user belongs to one site",
                            owner(j)
                        )
                    };
                    return Err(self.err(k, problem));
                }
            }
            out.push(Site {
                name: s.name.clone(),
                hosts: patterns,
                mysql_users: s.mysql_users.clone(),
            });
        }
        Ok(Sites::new(out))
    }

    /// A site name is one column wherever it is printed: letters, digits, '-', '_' and '.'
    /// (so that a domain name is a name).
    fn site_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !ok {
            return Err(self.err(
                key,
                format!(
                    "{name:?}: a site name must be 1 to {MAX_NAME} letters, digits, '-', '_' or '.'"
                ),
            ));
        }
        Ok(())
    }

    /// A host as `show traffic http` counts it: `example.com`, `*.example.com` (every name
    /// under it, at any depth), an IPv4 address or a bracketed IPv6 one; compared lower-cased,
    /// without port.
    fn site_host(&self, key: &str, text: &str) -> Result<HostPattern, ConfigError> {
        let t = text.trim();
        if t.is_empty() {
            return Err(self.err(key, "empty host"));
        }
        if t == "*" || t == "*." {
            return Err(self.err(
                key,
                format!(
                    "{text:?}: a site cannot take every host; list its names, or \"*.example.com\""
                ),
            ));
        }
        if t == "-" {
            return Err(self.err(
                key,
                "\"-\" is the key of requests without a Host; it belongs to no site",
            ));
        }
        let p = HostPattern::parse(t).map_err(|m| self.err(key, m))?;
        let len = match &p {
            HostPattern::Exact(n) => n.len(),
            HostPattern::Suffix(s) => s.len(),
        };
        if len > crate::stats::MAX_SITE_KEY {
            return Err(self.err(
                key,
                format!(
                    "longer than {} bytes: such a Host is never counted by name",
                    crate::stats::MAX_SITE_KEY
                ),
            ));
        }
        Ok(p)
    }

    /// A MySQL user name as the server knows it (compared exactly); not one of the keys under
    /// which traffic of no particular user is counted.
    fn site_user(&self, key: &str, user: &str) -> Result<(), ConfigError> {
        if user.is_empty() {
            return Err(self.err(key, "empty user name"));
        }
        if user.chars().any(char::is_control) {
            return Err(self.err(key, format!("{user:?} has a control character")));
        }
        if matches!(user, "(other)" | "(unknown)" | "(anonymous)") {
            return Err(self.err(
                key,
                format!("{user:?} counts traffic of no particular user; it belongs to no site"),
            ));
        }
        Ok(())
    }
}
