//! Kind numbers GRASP gives meaning to.

/// NIP-09 deletion request.
pub const DELETION: u16 = 5;
/// NIP-34 patch.
pub const PATCH: u16 = 1617;
/// NIP-34 pull request.
pub const PULL_REQUEST: u16 = 1618;
/// NIP-34 pull request update.
pub const PULL_REQUEST_UPDATE: u16 = 1619;
/// NIP-34 issue.
pub const ISSUE: u16 = 1621;
/// NIP-22 comment.
pub const COMMENT: u16 = 1111;
/// User grasp server list (replaceable).
pub const USER_GRASP_LIST: u16 = 10317;
/// A user's private list of repository servers (GRASP-08; NIP-44-encrypted to themselves).
pub const PRIVATE_GRASP_LIST: u16 = 10318;
/// Repository announcement (addressable).
pub const REPO_ANNOUNCEMENT: u16 = 30617;
/// Repository state (addressable).
pub const REPO_STATE: u16 = 30618;
