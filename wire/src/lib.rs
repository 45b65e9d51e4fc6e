//! Wire types shared by the filter and the cache service.
