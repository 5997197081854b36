//! The two frontends the black-box suite runs against, and [`frontend_tests!`], which runs
//! one test body against each.

use crate::{TestServer, TestServerBuilder};

/// Which server a test drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Frontend {
    /// `grasp-server`: relay and git on one port, git run in-process.
    #[default]
    Inline,
    /// `grasp-proxy` in front of nginx + fcgiwrap + `git http-backend`.
    Proxy,
}

impl Frontend {
    /// The binary's name.
    pub fn binary(self) -> &'static str {
        match self {
            Frontend::Inline => "grasp-server",
            Frontend::Proxy => "grasp-proxy",
        }
    }

    /// A builder for this frontend.
    pub fn builder(self) -> TestServerBuilder {
        TestServer::builder().frontend(self)
    }

    /// Starts this frontend with default settings.
    pub fn start(self) -> TestServer {
        self.builder().start()
    }
}

/// Runs test functions against every frontend. Each listed function is an
/// `async fn name(frontend: Frontend)` of the test file:
///
/// ```ignore
/// async fn clone_works(frontend: Frontend) {
///     let server = frontend.start();
///     // ...
/// }
///
/// frontend_tests!(clone_works);
/// ```
///
/// makes the tests `clone_works::inline` and `clone_works::proxy`.
#[macro_export]
macro_rules! frontend_tests {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn inline() {
                    super::$name($crate::Frontend::Inline).await
                }

                #[tokio::test]
                async fn proxy() {
                    super::$name($crate::Frontend::Proxy).await
                }
            }
        )+
    };
}
