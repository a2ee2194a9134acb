//! Tenant roles and what each may do (PRD F4.1).
//!
//! The database holds the permission table as data (`core.roles`, `core.permissions`,
//! `core.role_permissions`), which is what the gate loads and policies check. This is the
//! same table for the built-in roles, in Rust, so `api` functions written in Rust can ask
//! [`TenantRole::may`] before acting; a `#[pg_test]` proves the two agree.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TenantRole {
    Admin,
    Manager,
    Rep,
}

/// A named permission (`core.permissions.key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `workspace.read`: see the workspace and its members.
    ViewWorkspace,
    /// `workspace.update`: change the workspace's metadata.
    UpdateWorkspace,
    /// `users.invite`: invite sales reps; see, resend, revoke invitations.
    InviteUsers,
    /// `users.manage`: invite any role, change roles, deactivate and reactivate members.
    ManageUsers,
    /// `deals.assign`: reassign deals and contacts.
    AssignDeals,
    /// `records.read_all`: see every contact and deal, not only one's own.
    ReadAllRecords,
    /// `audit.read`: read the audit log.
    ReadAudit,
    /// `data.export`: export the workspace's data.
    ExportData,
    /// `data.import`: import contacts and organizations from CSV.
    ImportData,
    /// `data.erase`: erase a person's personal data (GDPR).
    EraseData,
    /// `fields.manage`: define and delete custom fields.
    ManageFields,
    /// `workspace.delete`: ask for the workspace's deletion, or cancel it.
    DeleteWorkspace,
}

impl Action {
    pub const ALL: [Action; 12] = [
        Action::ViewWorkspace,
        Action::UpdateWorkspace,
        Action::InviteUsers,
        Action::ManageUsers,
        Action::AssignDeals,
        Action::ReadAllRecords,
        Action::ReadAudit,
        Action::ExportData,
        Action::ImportData,
        Action::EraseData,
        Action::ManageFields,
        Action::DeleteWorkspace,
    ];

    /// The permission's key in `core.permissions`.
    pub fn key(self) -> &'static str {
        match self {
            Action::ViewWorkspace => "workspace.read",
            Action::UpdateWorkspace => "workspace.update",
            Action::InviteUsers => "users.invite",
            Action::ManageUsers => "users.manage",
            Action::AssignDeals => "deals.assign",
            Action::ReadAllRecords => "records.read_all",
            Action::ReadAudit => "audit.read",
            Action::ExportData => "data.export",
            Action::ImportData => "data.import",
            Action::EraseData => "data.erase",
            Action::ManageFields => "fields.manage",
            Action::DeleteWorkspace => "workspace.delete",
        }
    }
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
        use Action::*;
        match self {
            TenantRole::Admin => true,
            TenantRole::Manager => matches!(
                action,
                ViewWorkspace | InviteUsers | AssignDeals | ReadAllRecords
            ),
            TenantRole::Rep => matches!(action, ViewWorkspace),
        }
    }

    /// Which roles this role may give in an invitation: anyone with `users.manage` any
    /// role, with only `users.invite` sales reps (PRD F3.1).
    pub fn may_invite(self, role: TenantRole) -> bool {
        self.may(Action::ManageUsers) || (self.may(Action::InviteUsers) && role == TenantRole::Rep)
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
    fn admins_invite_anyone_managers_reps_reps_nobody() {
        use TenantRole::*;
        for role in TenantRole::ALL {
            assert!(Admin.may_invite(role));
            assert!(!Rep.may_invite(role));
        }
        assert!(Manager.may_invite(Rep));
        assert!(!Manager.may_invite(Manager));
        assert!(!Manager.may_invite(Admin));
    }

    #[test]
    fn permission_keys_are_distinct_and_well_formed() {
        let keys: std::collections::BTreeSet<&str> = Action::ALL.iter().map(|a| a.key()).collect();
        assert_eq!(keys.len(), Action::ALL.len());
        assert!(keys.iter().all(|k| k.contains('.')
            && k.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_')));
    }

    #[test]
    fn every_member_views_the_workspace() {
        for role in TenantRole::ALL {
            assert!(role.may(Action::ViewWorkspace), "{role}");
        }
    }
}
