/*!
Runtime protection around model loading. `sandbox`: `pickguard run`,
an unprivileged Landlock + seccomp sandbox for loading untrusted models.
*/

#[cfg(target_os = "linux")]
pub mod cgroup;
#[cfg(target_os = "linux")]
pub mod ns;
#[cfg(target_os = "linux")]
pub mod sandbox;
