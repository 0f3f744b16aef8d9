// certrenew — Key Vault's certificate events to the app (issue 14).
//
// The vault's Event Grid system topic and one event subscription delivering
// Microsoft.KeyVault.CertificateNearExpiry and CertificateExpired to the
// `keyvault_events` function (endpoint type AzureFunction). Event Grid
// retries with backoff; what it cannot deliver lands in a dead-letter blob
// container on the app's storage account, written with the topic's own
// identity (the account has no shared keys).
//
// Event Grid checks that the function exists when the subscription is made,
// and azd deploys the code after provisioning: the subscription is created
// only when `subscribe` is true (azd env set KEY_VAULT_EVENTS_SUBSCRIPTION
// true, then azd provision, after the first deploy).

param location string
param tags object

@description('Name of the vault whose certificate events are delivered.')
param keyVaultName string

@description('Name of the function app hosting keyvault_events.')
param functionAppName string

@description('Storage account holding the dead-letter container.')
param storageAccountName string

@description('Blob container for events Event Grid could not deliver.')
param deadLetterContainerName string = 'keyvault-events-deadletter'

@description('Create the event subscription (the keyvault_events function must already be deployed).')
param subscribe bool

var roleStorageBlobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource keyVault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource systemTopic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: 'evgt-${keyVaultName}'
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: keyVault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

// The topic writes undeliverable events to the dead-letter container only.
resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetterContainer.id, systemTopic.id, roleStorageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleStorageBlobDataContributor)
    principalId: systemTopic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

resource certificateEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2022-06-15' = if (subscribe) {
  parent: systemTopic
  name: 'certrenew-keyvault-events'
  properties: {
    eventDeliverySchema: 'EventGridSchema'
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: '${resourceId('Microsoft.Web/sites', functionAppName)}/functions/keyvault_events'
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
    // A failed invocation (Key Vault or the tables unreachable) is redelivered with backoff for up to a day.
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
          resourceId: storage.id
          blobContainerName: deadLetterContainer.name
        }
      }
    }
  }
  dependsOn: [
    deadLetterWriter
  ]
}

output systemTopicName string = systemTopic.name
output deadLetterContainerName string = deadLetterContainer.name
