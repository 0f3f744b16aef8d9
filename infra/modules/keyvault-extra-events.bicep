// certrenew — the event subscription of one more vault's system topic (issue
// 25): its certificate near-expiry and expired events to keyvault_events, as
// keyvault-events.bicep does for the app's own vault. Deployed into the
// vault's resource group after the topic's identity may write to the
// dead-letter container (see resources.bicep).

@description('Name of the vault\'s Event Grid system topic.')
param systemTopicName string

@description('Resource id of the function app hosting keyvault_events.')
param functionAppId string

@description('Resource id of the storage account holding the dead-letter container.')
param storageAccountId string

@description('Blob container for events Event Grid could not deliver.')
param deadLetterContainerName string

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' existing = {
  name: systemTopicName
}

resource certificateEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = {
  parent: systemTopic
  name: 'certrenew-keyvault-events'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${functionAppId}/functions/keyvault_events'
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.CertificateNearExpiry'
        'Microsoft.KeyVault.CertificateExpired'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: 10
      eventTimeToLiveInMinutes: 1440
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: storageAccountId
          blobContainerName: deadLetterContainerName
        }
      }
    }
  }
}
