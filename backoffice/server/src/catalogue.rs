//! The built-in permission and menu catalogue (docs/backoffice.md, "Permissions and menus").
//! Permissions are fixed in code because handlers check them; menus are stored (built-in ones
//! are inserted at start) so administrators can add their own.

use serde::Serialize;

/// Who may hold a permission (seed 001 §6.6.8: technical and business users separated).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Domain {
    /// System administration.
    Technical,
    /// Business functions and data.
    Business,
    /// Held by either (acting within one's own kind, e.g. managing users).
    Shared,
}

impl Domain {
    /// Whether a role of `role_domain` may hold a permission of this domain.
    pub fn fits(self, role_domain: &str) -> bool {
        match self {
            Domain::Shared => true,
            Domain::Technical => role_domain == "technical",
            Domain::Business => role_domain == "business",
        }
    }
}

/// One permission: `<service>:<object>:<function>`, shown under a menu page.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// The code handlers check.
    pub code: &'static str,
    /// The menu page it belongs to.
    pub menu_code: &'static str,
    /// query, edit, delete, …
    pub function: &'static str,
    /// Technical, business or shared.
    pub domain: Domain,
}

const fn p(
    code: &'static str,
    menu_code: &'static str,
    function: &'static str,
    domain: Domain,
) -> Permission {
    Permission {
        code,
        menu_code,
        function,
        domain,
    }
}

use Domain::{Business, Shared, Technical};

/// Every permission.
pub const PERMISSIONS: &[Permission] = &[
    p("platform:org:query", "system.orgs", "query", Shared),
    p("platform:org:edit", "system.orgs", "edit", Shared),
    p("platform:org:delete", "system.orgs", "delete", Shared),
    p("platform:user:query", "system.users", "query", Shared),
    p("platform:user:edit", "system.users", "edit", Shared),
    p("platform:user:delete", "system.users", "delete", Shared),
    p("platform:user:unlock", "system.users", "unlock", Shared),
    p("platform:role:query", "system.roles", "query", Shared),
    p("platform:role:edit", "system.roles", "edit", Shared),
    p("platform:role:delete", "system.roles", "delete", Shared),
    p("platform:role:review", "system.roles", "review", Shared),
    p("platform:menu:query", "system.menus", "query", Technical),
    p("platform:menu:edit", "system.menus", "edit", Technical),
    p("platform:menu:delete", "system.menus", "delete", Technical),
    p("platform:dict:query", "system.dict", "query", Business),
    p("platform:dict:edit", "system.dict", "edit", Business),
    p("platform:dict:delete", "system.dict", "delete", Business),
    p("platform:i18n:query", "system.i18n", "query", Technical),
    p("platform:i18n:edit", "system.i18n", "edit", Technical),
    p("platform:i18n:delete", "system.i18n", "delete", Technical),
    p("platform:task:query", "system.tasks", "query", Technical),
    p("platform:task:edit", "system.tasks", "edit", Technical),
    p("platform:task:delete", "system.tasks", "delete", Technical),
    p("platform:task:run", "system.tasks", "run", Technical),
    p(
        "platform:blacklist:query",
        "system.blacklist",
        "query",
        Technical,
    ),
    p(
        "platform:blacklist:edit",
        "system.blacklist",
        "edit",
        Technical,
    ),
    p(
        "platform:blacklist:delete",
        "system.blacklist",
        "delete",
        Technical,
    ),
    p("audit:log:query", "audit.logs", "query", Technical),
    p(
        "platform:loginlog:query",
        "audit.logins",
        "query",
        Technical,
    ),
    p(
        "platform:accesslog:query",
        "audit.access",
        "query",
        Technical,
    ),
    p("files:file:query", "system.files", "query", Shared),
    p("files:file:upload", "system.files", "upload", Shared),
    p("files:file:delete", "system.files", "delete", Shared),
];

/// The permission with `code`.
pub fn permission(code: &str) -> Option<&'static Permission> {
    PERMISSIONS.iter().find(|p| p.code == code)
}

/// A built-in menu entry.
#[derive(Debug, Clone, Copy)]
pub struct Menu {
    /// Unique code.
    pub code: &'static str,
    /// The parent directory's code.
    pub parent: Option<&'static str>,
    /// Console route.
    pub path: &'static str,
    /// `dir` or `page`.
    pub kind: &'static str,
    /// Order among siblings.
    pub sort: i64,
}

const fn m(
    code: &'static str,
    parent: Option<&'static str>,
    path: &'static str,
    kind: &'static str,
    sort: i64,
) -> Menu {
    Menu {
        code,
        parent,
        path,
        kind,
        sort,
    }
}

/// The built-in menu tree, parents before children.
pub const MENUS: &[Menu] = &[
    m("system", None, "", "dir", 10),
    m("system.orgs", Some("system"), "/orgs", "page", 10),
    m("system.users", Some("system"), "/users", "page", 20),
    m("system.roles", Some("system"), "/roles", "page", 30),
    m("system.menus", Some("system"), "/menus", "page", 40),
    m("system.dict", Some("system"), "/dict", "page", 50),
    m("system.i18n", Some("system"), "/i18n", "page", 60),
    m("system.tasks", Some("system"), "/tasks", "page", 70),
    m("system.blacklist", Some("system"), "/blacklist", "page", 80),
    m("system.files", Some("system"), "/files", "page", 90),
    m("audit", None, "", "dir", 20),
    m("audit.logs", Some("audit"), "/audit", "page", 10),
    m("audit.logins", Some("audit"), "/login-log", "page", 20),
    m("audit.access", Some("audit"), "/access-log", "page", 30),
];

/// Whether `code` is a built-in menu.
pub fn is_builtin_menu(code: &str) -> bool {
    MENUS.iter().any(|m| m.code == code)
}

/// The permissions that show a built-in menu page; empty for other menus.
pub fn menu_permissions(menu_code: &str) -> impl Iterator<Item = &'static str> + '_ {
    PERMISSIONS
        .iter()
        .filter(move |p| p.menu_code == menu_code)
        .map(|p| p.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_sits_under_a_page_and_codes_are_unique() {
        let mut codes: Vec<_> = PERMISSIONS.iter().map(|p| p.code).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes.len(), PERMISSIONS.len());
        for p in PERMISSIONS {
            assert!(
                MENUS
                    .iter()
                    .any(|m| m.code == p.menu_code && m.kind == "page"),
                "{}",
                p.code
            );
        }
        for m in MENUS {
            if let Some(parent) = m.parent {
                assert!(MENUS.iter().any(|d| d.code == parent && d.kind == "dir"));
            }
        }
    }

    #[test]
    fn domains_fit_roles() {
        assert!(Domain::Shared.fits("business"));
        assert!(Domain::Technical.fits("technical"));
        assert!(!Domain::Technical.fits("business"));
        assert!(!Domain::Business.fits("technical"));
    }
}
