//! The generated tonic servers and clients talk to each other, including the
//! server-streaming SnapshotMetadata RPCs.

use std::pin::Pin;

use csi_proto::v1::{
    identity_client::IdentityClient,
    identity_server::{Identity, IdentityServer},
    snapshot_metadata_client::SnapshotMetadataClient,
    snapshot_metadata_server::{SnapshotMetadata, SnapshotMetadataServer},
    BlockMetadata, BlockMetadataType, GetMetadataAllocatedRequest, GetMetadataAllocatedResponse,
    GetMetadataDeltaRequest, GetMetadataDeltaResponse, GetPluginCapabilitiesRequest,
    GetPluginCapabilitiesResponse, GetPluginInfoRequest, GetPluginInfoResponse, PluginCapability,
    ProbeRequest, ProbeResponse,
};
use tokio_stream::{wrappers::TcpListenerStream, Stream, StreamExt};
use tonic::{Request, Response, Status};

struct Plugin;

#[tonic::async_trait]
impl Identity for Plugin {
    async fn get_plugin_info(
        &self,
        _: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: "test.csi.example.com".into(),
            vendor_version: "0.0.1".into(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        use csi_proto::v1::plugin_capability::{service::Type, Service, Type as Cap};
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: vec![PluginCapability {
                r#type: Some(Cap::Service(Service {
                    r#type: Type::SnapshotMetadataService as i32,
                })),
            }],
        }))
    }

    async fn probe(&self, _: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl SnapshotMetadata for Plugin {
    type GetMetadataAllocatedStream = BoxStream<GetMetadataAllocatedResponse>;
    type GetMetadataDeltaStream = BoxStream<GetMetadataDeltaResponse>;

    async fn get_metadata_allocated(
        &self,
        request: Request<GetMetadataAllocatedRequest>,
    ) -> Result<Response<Self::GetMetadataAllocatedStream>, Status> {
        let start = request.into_inner().starting_offset;
        let items = (0..3).map(move |i| {
            Ok(GetMetadataAllocatedResponse {
                block_metadata_type: BlockMetadataType::FixedLength as i32,
                volume_capacity_bytes: 1 << 20,
                block_metadata: vec![BlockMetadata {
                    byte_offset: start + i * 4096,
                    size_bytes: 4096,
                }],
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn get_metadata_delta(
        &self,
        _: Request<GetMetadataDeltaRequest>,
    ) -> Result<Response<Self::GetMetadataDeltaStream>, Status> {
        Err(Status::unimplemented("no deltas"))
    }
}

#[tokio::test]
async fn identity_and_streaming_round_trip() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(Plugin))
            .add_service(SnapshotMetadataServer::new(Plugin))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );

    let endpoint = format!("http://{addr}");
    let mut identity = IdentityClient::connect(endpoint.clone()).await.unwrap();
    let info = identity
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "test.csi.example.com");
    let probe = identity.probe(ProbeRequest {}).await.unwrap().into_inner();
    assert_eq!(probe.ready, Some(true));
    let caps = identity
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(caps.capabilities.len(), 1);

    let mut metadata = SnapshotMetadataClient::connect(endpoint).await.unwrap();
    let mut stream = metadata
        .get_metadata_allocated(GetMetadataAllocatedRequest {
            snapshot_id: "snap-1".into(),
            starting_offset: 8192,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut offsets = Vec::new();
    while let Some(item) = stream.next().await {
        let item = item.unwrap();
        assert_eq!(item.block_metadata_type(), BlockMetadataType::FixedLength);
        offsets.extend(item.block_metadata.iter().map(|b| b.byte_offset));
    }
    assert_eq!(offsets, [8192, 12288, 16384]);

    let err = metadata
        .get_metadata_delta(GetMetadataDeltaRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    server.abort();
}
