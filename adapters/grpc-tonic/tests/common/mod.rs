//! Shared harness: one `ProfileService` over in-memory fakes, served over gRPC (the
//! real `serve` on a loopback port) and over HTTP (the warp routes, in process).

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use profile_auth_jwt::{AuthConfig, JwtVerifier};
use profile_core::domain::{AccountStatus, ProfileUpdate, RewardsBalance, UserId};
use profile_core::ports::{AuthError, TokenVerifier};
use profile_core::{ProfileService, ServiceConfig};
use profile_grpc_tonic::pb;
use profile_grpc_tonic::pb::profile_service_client::ProfileServiceClient;
use profile_grpc_tonic::{GrpcState, serve};
use profile_http_warp::AppState;
use profile_memory::{
    ManualClock, MemoryAccounts, MemoryCache, MemoryProfiles, MemoryRewards, sample_account,
};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const ACTIVE: i64 = 1;
pub const SUSPENDED: i64 = 2;
pub const DELETED: i64 = 3;
pub const OTHER: i64 = 4;
pub const MISSING: i64 = 99;
pub const EMAIL: &str = "ada@example.com";
pub const OTHER_EMAIL: &str = "taken@example.com";
pub const SECRET: &[u8] = b"grpc-tonic-test-secret";

/// A tiny verifier for tests of the server alone: `user-<id>` is that user, `expired`
/// has expired, anything else is invalid.
pub struct FakeVerifier;

impl TokenVerifier for FakeVerifier {
    fn verify(&self, token: &str) -> Result<UserId, AuthError> {
        if token == "expired" {
            return Err(AuthError::Expired);
        }
        token.strip_prefix("user-").and_then(|s| s.parse().ok()).ok_or(AuthError::Invalid)
    }
}

/// The fixed "now" of every test service, so both transports compute the same times.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 8, 31, 12).single().unwrap_or_default()
}

pub struct App {
    pub accounts: Arc<MemoryAccounts>,
    pub profiles: Arc<MemoryProfiles>,
    pub rewards: Arc<MemoryRewards>,
    pub cache: Arc<MemoryCache>,
    pub service: Arc<ProfileService>,
    pub auth: AuthConfig,
    /// The one verifier both transports use, as the server wires them.
    pub verifier: Arc<dyn TokenVerifier>,
}

impl App {
    pub fn new() -> Self {
        let accounts = MemoryAccounts::new();
        accounts.insert(profile_core::domain::AccountSnapshot {
            email: EMAIL.to_owned(),
            login_count: 3,
            ..sample_account(ACTIVE)
        });
        accounts.insert(profile_core::domain::AccountSnapshot {
            status: AccountStatus::Suspended,
            ..sample_account(SUSPENDED)
        });
        accounts.insert(profile_core::domain::AccountSnapshot {
            status: AccountStatus::Deleted,
            ..sample_account(DELETED)
        });
        accounts.insert(profile_core::domain::AccountSnapshot {
            email: OTHER_EMAIL.to_owned(),
            ..sample_account(OTHER)
        });
        let profiles = MemoryProfiles::new();
        let rewards = MemoryRewards::new();
        rewards.set(ACTIVE, Some(RewardsBalance { points: 1250, tier: Some("gold".into()) }));
        let cache = MemoryCache::new();
        let service = Arc::new(ProfileService::new(
            accounts.clone(),
            profiles.clone(),
            rewards.clone(),
            cache.clone(),
            ManualClock::new(t0()),
            ServiceConfig::default(),
        ));
        let auth = AuthConfig { secret: SECRET.to_vec(), issuer: None, audience: None };
        let verifier: Arc<dyn TokenVerifier> = Arc::new(JwtVerifier::new(&auth));
        Self { accounts, profiles, rewards, cache, service, auth, verifier }
    }

    /// Applies a merge patch to `user` through the core (test set-up).
    pub async fn setup(&self, user: i64, patch: &Value) {
        let parsed = ProfileUpdate::from_merge_patch(patch, self.service.today());
        self.service
            .update(user, parsed, profile_core::domain::Precondition::None)
            .await
            .unwrap_or_else(|e| panic!("set-up patch {patch} refused: {e:?}"));
    }

    pub fn http_routes(
        &self,
    ) -> impl warp::Filter<Extract = (warp::reply::Response,), Error = std::convert::Infallible> + Clone + 'static
    {
        profile_http_warp::routes(AppState::new(
            self.service.clone(),
            self.verifier.clone(),
            Arc::new(String::new),
        ))
    }

    /// A valid JWT for `user`, accepted by both transports.
    pub fn token(&self, user: i64) -> String {
        profile_auth_jwt::mint_token(&self.auth, user, Duration::from_secs(600)).expect("mint")
    }

    /// Starts the gRPC transport on a loopback port.
    pub async fn grpc(&self) -> Grpc {
        self.grpc_with(Duration::from_secs(1)).await
    }

    pub async fn grpc_with(&self, health_interval: Duration) -> Grpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let mut state = GrpcState::new(self.service.clone(), self.verifier.clone());
        state.health_interval = health_interval;
        let task = tokio::spawn(async move {
            serve(
                listener,
                state,
                async move {
                    let _ = stopped.await;
                },
                Duration::from_secs(2),
            )
            .await
        });
        let channel =
            Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
        Grpc {
            client: ProfileServiceClient::new(channel.clone()),
            channel,
            stop: Some(stop),
            task: Some(task),
            addr,
        }
    }
}

pub struct Grpc {
    pub client: ProfileServiceClient<Channel>,
    pub channel: Channel,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: Option<tokio::task::JoinHandle<Result<(), profile_grpc_tonic::ServeError>>>,
    pub addr: std::net::SocketAddr,
}

impl Grpc {
    pub async fn shutdown(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

/// A request with `authorization` metadata.
pub fn with_auth<T>(msg: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Some(a) = authorization {
        req.metadata_mut().insert("authorization", a.parse().expect("ascii metadata"));
    }
    req
}

fn time(t: &Option<prost_types::Timestamp>) -> Value {
    match t {
        None => Value::Null,
        Some(ts) => {
            let dt = DateTime::<Utc>::from_timestamp(ts.seconds, u32::try_from(ts.nanos).unwrap_or(0))
                .expect("valid timestamp");
            serde_json::to_value(dt).expect("time")
        }
    }
}

fn s(v: &Option<String>) -> Value {
    v.clone().map_or(Value::Null, Value::String)
}

fn b(v: Option<bool>) -> Value {
    v.map_or(Value::Null, Value::Bool)
}

/// A `Profile` message as the JSON document of SPEC §4, to compare with HTTP's.
pub fn profile_json(p: &pb::Profile) -> Value {
    let pe = p.personal.clone().unwrap_or_default();
    let pr = p.preferences.clone().unwrap_or_default();
    let n = pr.notifications.unwrap_or_default();
    let pv = pr.privacy.clone().unwrap_or_default();
    let st = p.statistics.unwrap_or_default();
    let bu = p.business.clone().unwrap_or_default();
    let r = p.rewards.clone().unwrap_or_default();
    let status = pb::RewardsStatus::try_from(r.status).map_or("?".to_owned(), |s| {
        s.as_str_name().trim_start_matches("REWARDS_STATUS_").to_ascii_lowercase()
    });
    json!({
        "user_id": p.user_id,
        "version": p.version,
        "created_at": time(&p.created_at),
        "updated_at": time(&p.updated_at),
        "personal": {
            "display_name": s(&pe.display_name), "first_name": s(&pe.first_name),
            "last_name": s(&pe.last_name), "email": s(&pe.email), "phone": s(&pe.phone),
            "avatar_url": s(&pe.avatar_url), "bio": s(&pe.bio), "birth_date": s(&pe.birth_date),
            "city": s(&pe.city), "country": s(&pe.country),
        },
        "preferences": {
            "language": s(&pr.language), "timezone": s(&pr.timezone), "theme": s(&pr.theme),
            "currency": s(&pr.currency),
            "notifications": { "email": b(n.email), "sms": b(n.sms), "push": b(n.push), "marketing": b(n.marketing) },
            "privacy": { "profile_visibility": s(&pv.profile_visibility), "show_activity": b(pv.show_activity) },
        },
        "statistics": {
            "member_since": time(&st.member_since), "last_login_at": time(&st.last_login_at),
            "login_count": st.login_count, "orders_count": st.orders_count,
            "total_spent_cents": st.total_spent_cents, "last_order_at": time(&st.last_order_at),
            "profile_completeness": st.profile_completeness,
        },
        "business": {
            "company_name": s(&bu.company_name), "job_title": s(&bu.job_title), "tax_id": s(&bu.tax_id),
            "website": s(&bu.website),
            "billing_address": bu.billing_address.as_ref().map_or(Value::Null, |a| json!({
                "line1": s(&a.line1), "line2": s(&a.line2), "city": s(&a.city),
                "postal_code": s(&a.postal_code), "country": s(&a.country),
            })),
        },
        "rewards": { "points": r.points, "tier": s(&r.tier), "status": status, "as_of": time(&r.as_of) },
    })
}

fn get_str(v: &Value, k: &str) -> Option<String> {
    v.get(k).and_then(Value::as_str).map(str::to_owned)
}

fn get_bool(v: &Value, k: &str) -> Option<bool> {
    v.get(k).and_then(Value::as_bool)
}

/// The editable part of a JSON document as a `Profile` message (nulls and keys the
/// message cannot hold are left out).
pub fn profile_from_json(v: &Value) -> pb::Profile {
    let personal = v.get("personal").filter(|x| x.is_object()).map(|p| pb::Personal {
        display_name: get_str(p, "display_name"),
        first_name: get_str(p, "first_name"),
        last_name: get_str(p, "last_name"),
        email: get_str(p, "email"),
        phone: get_str(p, "phone"),
        avatar_url: get_str(p, "avatar_url"),
        bio: get_str(p, "bio"),
        birth_date: get_str(p, "birth_date"),
        city: get_str(p, "city"),
        country: get_str(p, "country"),
    });
    let preferences = v.get("preferences").filter(|x| x.is_object()).map(|p| pb::Preferences {
        language: get_str(p, "language"),
        timezone: get_str(p, "timezone"),
        theme: get_str(p, "theme"),
        currency: get_str(p, "currency"),
        notifications: p.get("notifications").filter(|x| x.is_object()).map(|n| pb::Notifications {
            email: get_bool(n, "email"),
            sms: get_bool(n, "sms"),
            push: get_bool(n, "push"),
            marketing: get_bool(n, "marketing"),
        }),
        privacy: p.get("privacy").filter(|x| x.is_object()).map(|x| pb::Privacy {
            profile_visibility: get_str(x, "profile_visibility"),
            show_activity: get_bool(x, "show_activity"),
        }),
    });
    let business = v.get("business").filter(|x| x.is_object()).map(|bu| pb::Business {
        company_name: get_str(bu, "company_name"),
        job_title: get_str(bu, "job_title"),
        tax_id: get_str(bu, "tax_id"),
        website: get_str(bu, "website"),
        billing_address: bu.get("billing_address").filter(|x| x.is_object()).map(|a| pb::BillingAddress {
            line1: get_str(a, "line1"),
            line2: get_str(a, "line2"),
            city: get_str(a, "city"),
            postal_code: get_str(a, "postal_code"),
            country: get_str(a, "country"),
        }),
    });
    pb::Profile { personal, preferences, business, ..Default::default() }
}

/// Every leaf path of a JSON document (`null` and scalars are leaves).
pub fn leaf_paths(v: &Value) -> Vec<String> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let p = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&p, child, out);
                }
            }
            _ => out.push(prefix.to_owned()),
        }
    }
    let mut out = Vec::new();
    walk("", v, &mut out);
    out
}
