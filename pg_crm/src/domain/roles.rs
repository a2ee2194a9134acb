//! Tenant roles and what each may do (PRD F4.1).
//!
//! The permission table lives here, once; SQL policies mirror it for the tables, and
//! `api` functions ask [`TenantRole::may`] before acting so a denied caller gets a clear
//! 42501 rather than an update that silently touched no row.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRole {
    Admin,
    Manager,
    Rep,
}

/// Something a member may or may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ViewWorkspace,
    UpdateWorkspace,
}

impl TenantRole {
    pub const ALL: [TenantRole; 3] = [TenantRole::Admin, TenantRole::Manager, TenantRole::Rep];

    pub fn as_str(self) -> &'static str {
        match self {
            TenantRole::Admin => "admin",
            TenantRole::Manager => "manager",
            TenantRole::Rep => "rep",
        }
    }

    pub fn may(self, action: Action) -> bool {
        match action {
            Action::ViewWorkspace => true,
            Action::UpdateWorkspace => self == TenantRole::Admin,
        }
    }
}

impl fmt::Display for TenantRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownRole(pub String);

impl FromStr for TenantRole {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TenantRole::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_string()))
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn roles_round_trip_through_text() {
        for role in TenantRole::ALL {
            assert_eq!(role.as_str().parse::<TenantRole>(), Ok(role));
        }
        assert!("Admin".parse::<TenantRole>().is_err());
        assert!("owner".parse::<TenantRole>().is_err());
        assert!("".parse::<TenantRole>().is_err());
    }

    #[test]
    fn only_admins_update_the_workspace() {
        assert!(TenantRole::Admin.may(Action::UpdateWorkspace));
        assert!(!TenantRole::Manager.may(Action::UpdateWorkspace));
        assert!(!TenantRole::Rep.may(Action::UpdateWorkspace));
    }

    #[test]
    fn every_member_views_the_workspace() {
        for role in TenantRole::ALL {
            assert!(role.may(Action::ViewWorkspace), "{role}");
        }
    }
}
