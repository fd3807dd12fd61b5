//! Every service trims the one shared history of a channel to its own
//! `redis.history_len`, so their defaults must agree, or raising the value
//! on one service is silently undone by another.

use pulse_runtime::RedisSettings;

#[test]
fn every_service_has_the_same_history_and_link_defaults() {
    let no_env = Vec::<(String, String)>::new;
    let services: [(&str, RedisSettings); 4] = [
        ("pulse", pulse::Settings::defaults().unwrap().redis),
        ("pulse-ingest", pulse_ingest::Settings::defaults().unwrap().redis),
        ("pulse-gateway", pulse_websocket_gateway::settings::Settings::defaults().unwrap().redis),
        (
            "pulse-heartbeat-checker",
            pulse_heartbeat_checker::Settings::loader()
                .env_vars(no_env())
                .load::<pulse_heartbeat_checker::Settings>()
                .unwrap()
                .redis,
        ),
    ];
    for (service, redis) in &services {
        assert_eq!(redis.history_len, pulse_bus::DEFAULT_HISTORY_LEN, "{service}");
        assert_eq!(redis.ping_interval, services[0].1.ping_interval, "{service}");
        assert_eq!(redis.ping_timeout, services[0].1.ping_timeout, "{service}");
        assert!(redis.ping_timeout > std::time::Duration::ZERO, "{service}");
    }
}
