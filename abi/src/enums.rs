//! The ABI's small enums, each with its wire value and checked conversions from `i32`/`u32`.

use crate::UnknownValue;

/// Declares a `#[repr(u32)]` enum with explicit wire values, `TryFrom<i32>`, `TryFrom<u32>`,
/// `as_u32`/`as_i32` and the list of every variant (for tests and exhaustive hosts).
macro_rules! abi_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )+
        }

        impl $name {
            /// Every variant, in wire-value order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire value.
            pub const fn as_u32(self) -> u32 {
                self as u32
            }

            /// The wire value as the `i32` a Wasm function signature carries.
            pub const fn as_i32(self) -> i32 {
                self as i32
            }
        }

        impl TryFrom<u32> for $name {
            type Error = UnknownValue;

            fn try_from(value: u32) -> Result<Self, UnknownValue> {
                match value {
                    $( $value => Ok($name::$variant), )+
                    other => Err(UnknownValue { kind: stringify!($name), value: i64::from(other) }),
                }
            }
        }

        impl TryFrom<i32> for $name {
            type Error = UnknownValue;

            fn try_from(value: i32) -> Result<Self, UnknownValue> {
                u32::try_from(value)
                    .map_err(|_| UnknownValue { kind: stringify!($name), value: i64::from(value) })
                    .and_then($name::try_from)
            }
        }

        impl From<$name> for u32 {
            fn from(value: $name) -> u32 {
                value.as_u32()
            }
        }

        impl From<$name> for i32 {
            fn from(value: $name) -> i32 {
                value.as_i32()
            }
        }
    };
}

abi_enum! {
    /// What a stream callback tells the host to do with the stream.
    pub enum Action {
        /// Go on to the next filter.
        Continue = 0,
        /// Hold the stream (a paused body keeps buffering) until the filter resumes it with
        /// `proxy_continue_stream`, answers it with `proxy_send_local_response` or closes it.
        Pause = 1,
        /// 0.1.0 only, in some hosts: stop and end the stream. Never returned by weir's SDK.
        EndStream = 2,
    }
}

abi_enum! {
    /// Severity of a `proxy_log` line.
    pub enum LogLevel {
        /// Finest detail.
        Trace = 0,
        /// Debugging detail.
        Debug = 1,
        /// Normal operation.
        Info = 2,
        /// Something unexpected that the filter worked around.
        Warn = 3,
        /// The filter could not do what it should.
        Error = 4,
        /// The filter is broken (SDK panics are logged at this level before the trap).
        Critical = 5,
    }
}

abi_enum! {
    /// Which direction of a stream `proxy_continue_stream` / `proxy_close_stream` act on.
    pub enum StreamType {
        /// The HTTP request (downstream to upstream).
        HttpRequest = 0,
        /// The HTTP response (upstream to downstream).
        HttpResponse = 1,
        /// An L4 stream's downstream side.
        Downstream = 2,
        /// An L4 stream's upstream side.
        Upstream = 3,
    }
}

abi_enum! {
    /// Which byte buffer `proxy_get_buffer_bytes` / `proxy_set_buffer_bytes` act on.
    pub enum BufferType {
        /// The request body seen so far (in `proxy_on_request_body`).
        HttpRequestBody = 0,
        /// The response body seen so far (in `proxy_on_response_body`).
        HttpResponseBody = 1,
        /// L4 bytes from the downstream peer.
        DownstreamData = 2,
        /// L4 bytes from the upstream peer.
        UpstreamData = 3,
        /// The body of an HTTP callout's answer.
        HttpCallResponseBody = 4,
        /// A gRPC callout's received message.
        GrpcReceiveBuffer = 5,
        /// `vm_config.configuration` (in `proxy_on_vm_start`).
        VmConfiguration = 6,
        /// The plugin's `configuration` (in `proxy_on_configure`).
        PluginConfiguration = 7,
        /// Arguments of a foreign function call.
        CallData = 8,
    }
}

abi_enum! {
    /// Which header map the `proxy_*_header_map_*` functions act on.
    pub enum MapType {
        /// Request headers, pseudo-headers included.
        HttpRequestHeaders = 0,
        /// Request trailers.
        HttpRequestTrailers = 1,
        /// Response headers, `:status` included.
        HttpResponseHeaders = 2,
        /// Response trailers.
        HttpResponseTrailers = 3,
        /// A gRPC callout's initial metadata.
        GrpcReceiveInitialMetadata = 4,
        /// A gRPC callout's trailing metadata.
        GrpcReceiveTrailingMetadata = 5,
        /// The headers of an HTTP callout's answer.
        HttpCallResponseHeaders = 6,
        /// The trailers of an HTTP callout's answer.
        HttpCallResponseTrailers = 7,
    }
}

abi_enum! {
    /// Which side closed an L4 connection.
    pub enum PeerType {
        /// Not known.
        Unknown = 0,
        /// The proxy closed it.
        Local = 1,
        /// The peer closed it.
        Remote = 2,
    }
}

abi_enum! {
    /// The kind of a metric defined with `proxy_define_metric`.
    pub enum MetricType {
        /// Only goes up (`proxy_increment_metric`).
        Counter = 0,
        /// Set or moved either way.
        Gauge = 1,
        /// Observations (`proxy_record_metric`).
        Histogram = 2,
    }
}

abi_enum! {
    /// The kind of a child context. Not passed in the ABI: an SDK uses it to decide which
    /// user type a new context id becomes.
    pub enum ContextType {
        /// An HTTP stream (headers, body, trailers callbacks).
        HttpContext = 0,
        /// An L4 connection (data and close callbacks).
        StreamContext = 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_both_integer_types() {
        fn check<T>(all: &[T])
        where
            T: Copy + PartialEq + core::fmt::Debug + Into<u32> + Into<i32>,
            T: TryFrom<u32, Error = UnknownValue> + TryFrom<i32, Error = UnknownValue>,
        {
            for &v in all {
                let u: u32 = v.into();
                let i: i32 = v.into();
                assert_eq!(T::try_from(u), Ok(v));
                assert_eq!(T::try_from(i), Ok(v));
            }
        }
        check(Action::ALL);
        check(LogLevel::ALL);
        check(StreamType::ALL);
        check(BufferType::ALL);
        check(MapType::ALL);
        check(PeerType::ALL);
        check(MetricType::ALL);
        check(ContextType::ALL);
    }

    #[test]
    fn wire_values_match_the_spec() {
        assert_eq!(Action::Pause.as_u32(), 1);
        assert_eq!(LogLevel::Critical.as_u32(), 5);
        assert_eq!(StreamType::Upstream.as_u32(), 3);
        assert_eq!(BufferType::HttpCallResponseBody.as_u32(), 4);
        assert_eq!(BufferType::PluginConfiguration.as_u32(), 7);
        assert_eq!(BufferType::CallData.as_u32(), 8);
        assert_eq!(MapType::HttpResponseHeaders.as_u32(), 2);
        assert_eq!(MapType::HttpCallResponseTrailers.as_u32(), 7);
        assert_eq!(PeerType::Remote.as_u32(), 2);
        assert_eq!(MetricType::Histogram.as_u32(), 2);
    }

    #[test]
    fn unknown_and_negative_values_are_errors() {
        assert_eq!(
            BufferType::try_from(9u32),
            Err(UnknownValue {
                kind: "BufferType",
                value: 9
            })
        );
        assert_eq!(
            MapType::try_from(-1i32),
            Err(UnknownValue {
                kind: "MapType",
                value: -1
            })
        );
        assert!(LogLevel::try_from(6i32).is_err());
        assert!(LogLevel::try_from(u32::MAX).is_err());
        assert!(PeerType::try_from(i32::MIN).is_err());
        assert!(MetricType::try_from(3u32).is_err());
        assert!(StreamType::try_from(4u32).is_err());
        assert!(Action::try_from(3i32).is_err());
        assert!(ContextType::try_from(2u32).is_err());
    }
}
