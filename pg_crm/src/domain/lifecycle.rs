//! Who may enter a workspace, by the workspace's status and the member's (PRD F1.4, F1.5;
//! issue 9). The gate (`crm_private.begin_request`) applies it on every request.
//!
//! - `active`: members whose membership is active.
//! - `suspended` (by an operator): nobody; the data stays.
//! - `pending_deletion` (an admin asked for deletion; the grace period runs): every member's
//!   access ends at once, but an active admin still gets in with a context that reaches
//!   only `api.cancel_workspace_deletion` and `api.get_workspace_settings`: no tenant is
//!   set, so every row-level security policy fails closed.
//! - `deleted`: nobody (only a tombstone is left).

use super::roles::TenantRole;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The member's full context.
    Full,
    /// An admin of a workspace waiting for deletion: enough to cancel it, nothing else.
    DeletionPending,
    /// Refused, with the message the member sees.
    Refused(&'static str),
}

pub fn access(tenant_status: &str, member_status: &str, role: TenantRole) -> Access {
    let member_active = member_status == "active";
    match tenant_status {
        "active" if member_active => Access::Full,
        "active" => Access::Refused("your membership of this workspace is deactivated"),
        "pending_deletion" if member_active && role == TenantRole::Admin => Access::DeletionPending,
        "pending_deletion" => Access::Refused("this workspace is scheduled for deletion"),
        "deleted" => Access::Refused("this workspace has been deleted"),
        _ => Access::Refused("this workspace is suspended"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use TenantRole::*;

    #[test]
    fn active_workspaces_let_active_members_in() {
        for role in TenantRole::ALL {
            assert_eq!(access("active", "active", role), Access::Full);
            assert_eq!(
                access("active", "deactivated", role),
                Access::Refused("your membership of this workspace is deactivated")
            );
        }
    }

    #[test]
    fn a_workspace_waiting_for_deletion_lets_only_its_active_admins_cancel() {
        assert_eq!(
            access("pending_deletion", "active", Admin),
            Access::DeletionPending
        );
        for (member, role) in [("active", Manager), ("active", Rep), ("deactivated", Admin)] {
            assert_eq!(
                access("pending_deletion", member, role),
                Access::Refused("this workspace is scheduled for deletion")
            );
        }
    }

    #[test]
    fn suspended_and_deleted_workspaces_let_nobody_in() {
        for role in TenantRole::ALL {
            assert_eq!(
                access("suspended", "active", role),
                Access::Refused("this workspace is suspended")
            );
            assert_eq!(
                access("deleted", "active", role),
                Access::Refused("this workspace has been deleted")
            );
            assert_eq!(
                access("unknown", "active", role),
                Access::Refused("this workspace is suspended")
            );
        }
    }
}
